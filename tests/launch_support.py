"""Helpers of the deploy and launch tests (tests/test_deploy.py, tests/test_slow_launch.py).

Every process a launch test starts is stopped by PID, with its whole process tree: never by name.
`ray stop` is not used by the root-run tests because it terminates every Ray process on the machine
(it matches process names), including other people's clusters.
"""

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
COMPOSE_FILE = REPO / "docker-compose.yml"
CLUSTER_FILE = REPO / "deploy" / "cluster.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
VENV_BIN = Path(sys.executable).parent  # the interpreter running the tests has the package installed
PY_DIR = f"python{sys.version_info.major}.{sys.version_info.minor}"


# ---------------------------------------------------------------------------------------------- ports

def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free a moment ago (all sockets held open until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


# ----------------------------------------------------------------------------------- compose variables

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


def interpolate(value, env: dict | None = None, required: str = "required-value"):
    """Compose-style interpolation of every string in a parsed compose file.

    `${VAR}` -> env or "", `${VAR:-default}` / `${VAR-default}` -> env or default, `${VAR:?message}` /
    `${VAR?message}` -> env or `required` (compose would stop with the message), `${VAR:+alt}`, `$$` -> `$`.
    """
    env = env or {}
    if isinstance(value, dict):
        return {k: interpolate(v, env, required) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, required) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match):
        name, op, arg = match["name"], match["op"], match["arg"]
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            return env[name] if present else arg
        if op in (":?", "?"):
            return env[name] if present else required
        if op in (":+", "+"):
            return arg if present else ""
        return env.get(name, "")

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def load_compose(env: dict | None = None) -> dict:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env)


def required_compose_variables() -> set[str]:
    return {m["name"] for m in _VARIABLE.finditer(COMPOSE_FILE.read_text()) if (m["op"] or "").endswith("?")}


def option(argv: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in an argument list."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


# ------------------------------------------------------------------------------------------- processes

def _proc_table() -> dict[int, dict]:
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            status = Path(f"/proc/{pid}/status").read_text()
            uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                cwd = ""
        except (OSError, AttributeError, ValueError):
            continue
        table[pid] = {"state": fields[0], "ppid": int(fields[1]), "uid": uid, "cmdline": cmdline, "cwd": cwd}
    return table


def _descendants(root: int, table: dict[int, dict]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, info in table.items():
        children.setdefault(info["ppid"], []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"  # a zombie has exited


def stop_pids(pids: list[int], first_signal: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Signal each PID, wait up to `grace` seconds, then SIGKILL whatever is left."""
    pids = [p for p in dict.fromkeys(pids) if p != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, first_signal)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)


def pids_matching(*, uid: int | None = None, markers: tuple[str, ...] = ()) -> list[int]:
    """PIDs owned by `uid`, or whose command line or working directory contains one of `markers`
    (unique temporary paths of one test)."""
    found = []
    for pid, info in _proc_table().items():
        if pid == os.getpid() or not _alive(pid):
            continue
        if uid is not None and info["uid"] == uid:
            found.append(pid)
        elif any(m and (m in info["cmdline"] or info["cwd"].startswith(m)) for m in markers):
            found.append(pid)
    return found


class Processes:
    """Long-running processes of one test, each stopped with its process tree by `stop_all`."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started: list[tuple[str, subprocess.Popen, int]] = []
        self.markers: list[str] = []  # paths unique to this test: any process using one is ours

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, argv: list[str], *, env: dict | None = None, cwd: Path | str | None = None,
              user: str | None = None, stop_signal: int = signal.SIGTERM) -> subprocess.Popen:
        log = open(self.log(name), "ab")
        try:
            proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True,
                                    user=user, group=pwd.getpwnam(user).pw_gid if user else None,
                                    extra_groups=[] if user else None)
        finally:
            log.close()
        self.started.append((name, proc, stop_signal))
        return proc

    def check_running(self, proc: subprocess.Popen, name: str) -> None:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail(self.log(name))}")

    def stop(self, proc: subprocess.Popen, stop_signal: int = signal.SIGTERM, grace: float = 20.0) -> None:
        table = _proc_table()
        tree = [proc.pid] + _descendants(proc.pid, table)
        # The root first (it may shut its children down cleanly), then the rest of the tree.
        stop_pids([proc.pid], stop_signal, grace)
        stop_pids([p for p in tree if _alive(p)], signal.SIGTERM, 5.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        while self.started:
            _, proc, stop_signal = self.started.pop()
            self.stop(proc, stop_signal)
        leftovers = pids_matching(markers=tuple(self.markers))  # daemons re-parented away from the tree
        if leftovers:
            stop_pids(leftovers, signal.SIGTERM, 10.0)


def tail(path: Path, chars: int = 6000) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return text[-chars:]


def run(argv: list, *, timeout: float, log: Path, env: dict | None = None, cwd: Path | str | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a command to completion with a hard timeout; on timeout its whole process tree is stopped.

    Output goes to `log` (appended) and is returned; a failure raises with the output's tail."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(map(str, argv))}\n".encode())
        out.flush()
        start = out.tell()
        proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tree = [proc.pid] + _descendants(proc.pid, _proc_table())
            stop_pids(tree, signal.SIGTERM, 5.0)
            proc.wait(timeout=10)
            raise AssertionError(f"timed out after {timeout:.0f} s: {argv}\n{tail(log)}") from None
    text = Path(log).read_bytes()[start:].decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {argv}\n{text[-6000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, text, "")


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.5, check=None):
    """Poll `predicate` until it returns a truthy value; `check` (optional) raises when a server died."""
    deadline = time.monotonic() + timeout
    while True:
        if check:
            check()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def http_status(url: str, headers: dict | None = None, timeout: float = 5.0) -> int | None:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def short_tempdir(prefix: str) -> Path:
    """A directory with a short absolute path: Ray's Unix sockets must fit in 107 characters, and
    pytest's tmp_path (under a 0700 directory) is neither short nor reachable by other users."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


# ------------------------------------------------------------------------------------------------- ray

def ray_env(extra: dict | None = None) -> dict:
    """The environment of Ray CLIs, servers and drivers in these tests: the venv first on PATH (a job's
    `python` is the one on the raylet's PATH), no inherited cluster address, no usage stats."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def ray_head_argv(temp_dir: Path, *, node_ip: str, cpus: int, gcs_port: int, dashboard_port: int) -> list[str]:
    client, agent_http, agent_grpc, runtime_env, metrics, node_manager, object_manager = free_ports(7)
    return [VENV_BIN / "ray", "start", "--head", "--block", "--node-ip-address", node_ip, "--port", gcs_port,
            "--dashboard-host", "127.0.0.1", "--dashboard-port", dashboard_port,
            "--ray-client-server-port", client, "--dashboard-agent-listen-port", agent_http,
            "--dashboard-agent-grpc-port", agent_grpc, "--runtime-env-agent-port", runtime_env,
            "--metrics-export-port", metrics, "--node-manager-port", node_manager,
            "--object-manager-port", object_manager, "--num-cpus", cpus,
            "--object-store-memory", 200 * 1024 * 1024, "--temp-dir", temp_dir, "--disable-usage-stats"]


def ray_worker_argv(temp_dir: Path, *, node_ip: str, cpus: int, gcs_address: str) -> list[str]:
    agent_http, agent_grpc, runtime_env, metrics, node_manager, object_manager = free_ports(6)
    return [VENV_BIN / "ray", "start", "--block", "--address", gcs_address, "--node-ip-address", node_ip,
            "--dashboard-agent-listen-port", agent_http, "--dashboard-agent-grpc-port", agent_grpc,
            "--runtime-env-agent-port", runtime_env, "--metrics-export-port", metrics,
            "--node-manager-port", node_manager, "--object-manager-port", object_manager, "--num-cpus", cpus,
            "--object-store-memory", 200 * 1024 * 1024, "--temp-dir", temp_dir, "--disable-usage-stats"]


# ------------------------------------------------------------------------------ users, sshd, postgres

@contextlib.contextmanager
def throwaway_user(home: Path):
    """A Unix account that exists only for one test (home at `home`); afterwards its processes are
    stopped by PID and the account is deleted. Its password field is '*': no password login, not locked."""
    name = "sltci" + secrets.token_hex(4)
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/bash",
                    "--password", "*", "--user-group", name], check=True, capture_output=True, timeout=30)
    try:
        entry = pwd.getpwnam(name)
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield entry
    finally:
        uid = pwd.getpwnam(name).pw_uid
        for _ in range(3):
            pids = pids_matching(uid=uid)
            if not pids:
                break
            stop_pids(pids, signal.SIGTERM, 10.0)
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


def chown_tree(path: Path, entry) -> None:
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def start_sshd(procs: Processes, directory: Path, user: str, port: int) -> Path:
    """sshd on 127.0.0.1:port for one user, with its own host key and authorized keys; returns the
    client's private key. Nothing outside `directory` is touched except sshd's privilege-separation
    directory /run/sshd, which sshd needs and the openssh-server package normally creates at boot."""
    directory.mkdir(parents=True, exist_ok=True)
    host_key, client_key = directory / "host_ed25519", directory / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "slt-launch-test", "-f", str(key)],
                       check=True, capture_output=True, timeout=30)
    authorized = directory / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    authorized.chmod(0o644)
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin no",
        f"AllowUsers {user}", "AllowTcpForwarding yes", "X11Forwarding no", "LogLevel VERBOSE", ""]))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = procs.start("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", config])
    wait_until(lambda: _accepts(port), timeout=30, what="sshd", check=lambda: procs.check_running(proc, "sshd"))
    return client_key


def _accepts(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def postgres_bin() -> Path | None:
    """The directory of initdb and postgres (Debian keeps them in /usr/lib/postgresql/<major>/bin)."""
    for name in ("initdb",):
        found = shutil.which(name)
        if found:
            return Path(os.path.realpath(found)).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return candidates[-1].parent if candidates else None


def start_postgres(procs: Processes, directory: Path, port: int, password: str) -> None:
    """A throw-away PostgreSQL server on 127.0.0.1:port, run by the `postgres` account (initdb refuses
    root), with its data, socket and password file in `directory`; stopped by PID (SIGINT: fast shutdown)."""
    entry = pwd.getpwnam("postgres")
    bin_dir = postgres_bin()
    directory.mkdir(parents=True, exist_ok=True)
    os.chown(directory, entry.pw_uid, entry.pw_gid)
    directory.chmod(0o700)
    pwfile = directory / "pwfile"
    pwfile.write_text(password + "\n")
    os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    data = directory / "data"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C", "HOME": str(directory)}
    initdb = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256",
                             f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync"],
                            user="postgres", group=entry.pw_gid, extra_groups=[], cwd=directory, env=env,
                            capture_output=True, text=True, timeout=180)
    if initdb.returncode != 0:
        raise AssertionError(f"initdb failed:\n{initdb.stdout[-3000:]}\n{initdb.stderr[-3000:]}")
    proc = procs.start("postgres", [bin_dir / "postgres", "-D", data, "-p", port, "-c", "listen_addresses=127.0.0.1",
                                    "-k", directory, "-c", "fsync=off", "-c", "max_connections=50"],
                       env=env, cwd=directory, user="postgres", stop_signal=signal.SIGINT)
    procs.markers.append(str(directory))
    import psycopg2

    def connects():
        try:
            psycopg2.connect(host="127.0.0.1", port=port, user="postgres", password=password,
                             dbname="postgres", connect_timeout=3).close()
            return True
        except psycopg2.OperationalError:
            return False

    wait_until(connects, timeout=60, what="PostgreSQL", check=lambda: procs.check_running(proc, "postgres"))


# ------------------------------------------------------------------------- the test cluster YAML

def ssh_proxy_command(user: str, key: Path, port: int) -> str:
    """Ray's launcher always connects to port 22 (it has no port option); an sshd on another port is
    reached through an ssh ProxyCommand that tunnels to it with -W (a jump through the same sshd)."""
    return (f"ssh -p {port} -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            f"-o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR -W %h:{port} {user}@%h")


def local_cluster_config(*, cluster_name: str, user: str, key: Path, ssh_port: int, token_file: Path,
                        gcs_port: int, dashboard_port: int, system_python: str) -> dict:
    """deploy/cluster.yaml pointed at one machine: head 127.0.0.1 over the test's sshd, no workers,
    the test's token, free ports, and an offline install in place of ./install.sh.

    The install keeps the layout of deploy/cluster.yaml (~/slt-sweep/.venv, made the login shell's
    python by the YAML's own PATH line) but, instead of downloading the pinned dependencies, points a
    .pth file at this machine's venv, where they are installed already; this package itself is built
    and installed from the copy that file_mounts put on the node."""
    config = yaml.safe_load(CLUSTER_FILE.read_text())
    config["cluster_name"] = cluster_name
    config["provider"] = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    config["auth"] = {"ssh_user": user, "ssh_private_key": str(key),
                      "ssh_proxy_command": ssh_proxy_command(user, key, ssh_port)}
    config["min_workers"] = config["max_workers"] = 0
    mounts = dict(config["file_mounts"])
    assert "~/.ray/auth_token" in mounts
    mounts["~/.ray/auth_token"] = str(token_file)
    config["file_mounts"] = mounts

    venv = "~/slt-sweep/.venv"
    site_packages = sysconfig.get_paths()["purelib"]
    deploy_setup = config["setup_commands"]
    assert any("./install.sh" in c for c in deploy_setup)
    config["setup_commands"] = [
        f"test -x {venv}/bin/python || {system_python} -m venv --without-pip {venv}",
        f"echo {site_packages} > {venv}/lib/{PY_DIR}/site-packages/_pinned_dependencies.pth",
        "cd ~/slt-sweep && .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "
        "--no-build-isolation --no-index .",
        "printf '#!%s\\nimport sys\\nfrom ray.scripts.scripts import main\\nsys.exit(main())\\n' "
        f"\"$HOME/slt-sweep/.venv/bin/python\" > {venv}/bin/ray && chmod +x {venv}/bin/ray",
        *[c for c in deploy_setup if "./install.sh" not in c],
    ]
    extra = dict(zip(("--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                      "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port",
                      "--object-manager-port"), free_ports(7)))
    head = []
    for command in config["head_start_ray_commands"]:
        if command.startswith("ray start --head"):
            assert "--port=6379" in command and "--dashboard-port=8265" in command
            command = command.replace("--port=6379", f"--port={gcs_port}").replace(
                "--dashboard-port=8265", f"--dashboard-port={dashboard_port}")
            command += " " + " ".join(f"{k}={v}" for k, v in extra.items())
            command += f" --node-ip-address=127.0.0.1 --num-cpus=2 --object-store-memory={200 * 1024 * 1024}"
        head.append(command)
    config["head_start_ray_commands"] = head
    return config
