"""The launch paths end to end, each running the real demo sweep (2 trials, 1 epoch, bundled digits):

- `ray job submit` to a `ray start --head` on loopback;
- `ray submit` with (a one-machine version of) deploy/cluster.yaml, over SSH to an sshd on 127.0.0.1;
- the docker-compose.yml topology as local processes: PostgreSQL, an MLflow server backed by it,
  a Ray head plus a Ray worker node sharing one storage path, and a job submitted to the head.

Every server runs on 127.0.0.1 (the two Ray nodes of the compose topology on 127.0.0.2, see
below) with free ports and private directories, and is stopped by PID, with its process tree, even
when the test fails. These tests need root (throw-away accounts, sshd, PostgreSQL as `postgres`)
and the packages .ci/run installs (openssh-server, rsync, postgresql).
"""

import contextlib
import getpass
import hashlib
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from launch_support import (PY_DIR, REPO, VENV_BIN, Processes, chown_tree, free_port, free_ports, http_status,
                            load_compose, local_cluster_config, option, postgres_bin, ray_env, ray_head_argv,
                            ray_worker_argv, run, short_tempdir, start_postgres, start_sshd, throwaway_user,
                            wait_until)

pytestmark = pytest.mark.slow

SWEEP = ["sweep/decay_rate.py", "--profile", "demo", "--set", "num_samples=2", "--set", "base.epochs=1", "--quiet"]
RAY = str(VENV_BIN / "ray")
PARENT_TAG = "mlflow.parentRunId"


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: throw-away accounts, sshd and PostgreSQL run as other users (CI runs as root)")


@pytest.fixture
def scratch():
    """Short directories under /tmp (Ray's socket paths must stay short), removed at the end."""
    made = []

    def make(prefix: str) -> Path:
        made.append(short_tempdir(prefix))
        return made[-1]

    yield make
    for directory in made:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def procs(tmp_path, scratch):
    """Servers of one test; set up after `scratch`, so they are stopped before its directories go."""
    processes = Processes(tmp_path / "logs")
    yield processes
    processes.stop_all()


def start_ray_head(procs: Processes, temp_dir: Path, env: dict, *, node_ip: str, cpus: int) -> tuple[int, int]:
    gcs, dashboard = free_ports(2)
    procs.markers.append(str(temp_dir))
    head = procs.start("ray-head", ray_head_argv(temp_dir, node_ip=node_ip, cpus=cpus, gcs_port=gcs,
                                                 dashboard_port=dashboard), env=env, cwd=temp_dir)
    wait_until(lambda: http_status(f"http://127.0.0.1:{dashboard}/api/gcs_healthz") == 200, timeout=180,
               what="the Ray head", interval=1, check=lambda: procs.check_running(head, "ray-head"))
    return gcs, dashboard


def ray_json(args: list[str], env: dict, timeout: float = 120) -> list[dict]:
    """`ray list ... --format json`, retried while the state API is still starting (it can answer
    with a message instead of JSON for a few seconds after the head is up)."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run([RAY, *args, "--format", "json"], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        try:
            if done.returncode == 0:
                return json.loads(done.stdout)
        except json.JSONDecodeError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"ray {' '.join(args)}: exit {done.returncode}\n{done.stdout[-2000:]}\n"
                                 f"{done.stderr[-2000:]}")
        time.sleep(2)


def submit_job(procs: Processes, env: dict, dashboard: int, job_id: str, storage: Path, tracking_uri: str) -> str:
    address = f"http://127.0.0.1:{dashboard}"
    submitted = run([RAY, "job", "submit", "--address", address, "--working-dir", ".", "--submission-id", job_id,
                     "--", "python", *SWEEP, "--storage", storage, "--tracking-uri", tracking_uri],
                    timeout=540, log=procs.log("job-submit"), env=env, cwd=REPO)
    assert f"Job '{job_id}' succeeded" in submitted.stdout, submitted.stdout[-4000:]
    request = urllib.request.Request(f"{address}/api/jobs/{job_id}",
                                     headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
    with urllib.request.urlopen(request, timeout=30) as response:  # the job server's own record
        job = json.load(response)
    assert job["status"] == "SUCCEEDED", job
    assert job["entrypoint"].startswith("python sweep/decay_rate.py")
    return submitted.stdout


def check_sweep(storage: Path, tracking_uri: str, trials: int = 2) -> dict:
    """The sweep wrote Tune results to `storage` and one parent run with `trials` FINISHED children."""
    from mlflow.tracking import MlflowClient

    sweeps = [p for p in storage.glob("decay_rate-demo-*") if (p / "sweep.json").is_file()]
    assert len(sweeps) == 1, f"expected one sweep folder in {storage}: {list(storage.iterdir())}"
    record = json.loads((sweeps[0] / "sweep.json").read_text())
    assert record["tracking_uri"] == tracking_uri
    results = list((sweeps[0] / "tune").glob("*/result.json"))
    assert len(results) == trials, results

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("decay_rate")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    assert [p.info.run_id for p in parents] == [record["parent_run_id"]]
    assert parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == record["parent_run_id"]]
    assert len(children) == trials == len(runs) - 1
    for child in children:
        assert child.info.status == "FINISHED", child.info
        assert child.data.tags.get("status") == "finished"
        assert 0.0 <= child.data.metrics["test_accuracy"] <= 1.0
    return {"record": record, "parent": parents[0], "children": children}


# ------------------------------------------------------------------------------- (b) ray job submit

def test_ray_job_submit_to_a_loopback_head(tmp_path, procs, scratch):
    started = time.monotonic()
    env = ray_env({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # ray start and every driver/CLI: stay on 127.0.0.1
                   "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    temp_dir = scratch("slt-rj-")
    gcs, dashboard = start_ray_head(procs, temp_dir, env, node_ip="127.0.0.1", cpus=2)
    nodes = ray_json(["list", "nodes", "--address", f"127.0.0.1:{gcs}"], env)
    assert [(n["node_ip"], n["state"]) for n in nodes] == [("127.0.0.1", "ALIVE")]

    storage = tmp_path / "ray_results"  # absolute: the job's driver runs in a temporary working dir
    (tmp_path / "mlflow").mkdir()
    tracking = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    output = submit_job(procs, env, dashboard, "sweep-job-submit", storage, tracking)
    assert "2 trials, 0 failed" in output
    check_sweep(storage, tracking)
    # The job's driver joined this cluster (RAY_ADDRESS set by the job server), not a private Ray.
    assert f"127.0.0.1:{gcs}" in output
    print(f"ray job submit path: {time.monotonic() - started:.0f} s")


# ----------------------------------------------------------------- (c) ray submit deploy/cluster.yaml

def system_python() -> str | None:
    """A Python of the tests' minor version that any account can run (the venv's base interpreter may
    live under /root, which other accounts cannot enter)."""
    for directory in (Path(sys.base_prefix) / "bin", Path("/usr/bin"), Path("/usr/local/bin")):
        candidate = directory / PY_DIR
        if candidate.is_file() and world_readable(candidate.parent) and candidate.stat().st_mode & stat.S_IXOTH:
            return str(candidate)
    return None


def world_readable(path: Path) -> bool:
    """Every directory up to `path` can be entered by other accounts, and `path` can be listed."""
    path = path.resolve()
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def test_ray_submit_with_the_cluster_yaml_over_ssh(tmp_path, procs, scratch):
    needs_root()
    missing = [tool for tool in ("ssh", "ssh-keygen", "rsync", "useradd", "userdel") if not shutil.which(tool)]
    missing += [] if Path("/usr/sbin/sshd").is_file() else ["/usr/sbin/sshd"]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (.ci/run installs openssh-server and rsync)")
    python = system_python()
    if python is None:
        pytest.skip(f"no system {PY_DIR} that a throw-away account can run")
    site_packages = Path(sysconfig.get_paths()["purelib"])
    if not world_readable(site_packages):
        pytest.skip(f"{site_packages} is not readable by other accounts")

    started = time.monotonic()
    base = scratch("slt-ssh-")
    home = base / "h"
    control = None
    with throwaway_user(home) as user:
        try:
            port = free_port()
            key = start_sshd(procs, base / "sshd", user.pw_name, port)
            # The node account's login shell: its own Ray temp dir (/tmp/ray holds other people's
            # sessions), one loopback node; no `python` on PATH until `ray up` installs the package.
            (home / ".bashrc").write_text(
                "# throw-away account of tests/test_slow_launch.py\n"
                'export RAY_TMPDIR="$HOME/rt"\n'
                "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0\n"
                "export RAY_USAGE_STATS_ENABLED=0\n")
            (home / ".profile").write_text("[ -f ~/.bashrc ] && . ~/.bashrc\n")
            (home / "rt").mkdir()
            shared = base / "shared"  # stands in for the lab's NFS path
            shared.mkdir()
            chown_tree(home, user)
            chown_tree(shared, user)
            token = base / "auth_token"
            token.write_text(secrets.token_hex(32))
            token.chmod(0o600)

            cluster_name = f"slt-test-{secrets.token_hex(4)}"
            gcs, dashboard = free_ports(2)
            config = local_cluster_config(cluster_name=cluster_name, user=user.pw_name, key=key, ssh_port=port,
                                          token_file=token, gcs_port=gcs, dashboard_port=dashboard,
                                          system_python=python)
            cluster_file = base / "cluster.yaml"
            cluster_file.write_text(yaml.safe_dump(config, sort_keys=False))
            # The launcher's local state (RAY_TMPDIR) and config cache (TMPDIR) stay in `base`; its ssh
            # control sockets live in /tmp/ray_ssh_<user hash>/<cluster hash> (one per cluster name).
            client_tmp = base / "client"
            client_tmp.mkdir()
            env = ray_env({"RAY_TMPDIR": str(client_tmp), "TMPDIR": str(client_tmp)})
            env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
            control = (Path("/tmp") / f"ray_ssh_{hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]}"
                       / hashlib.sha256(cluster_name.encode()).hexdigest()[:10])
            procs.markers += [str(control), str(base)]

            run([RAY, "up", "-y", "--no-config-cache", "--disable-usage-stats", cluster_file], timeout=420,
                log=procs.log("ray-up"), env=env, cwd=REPO)
            storage = shared / "ray_results"
            tracking = f"sqlite:///{shared / 'mlflow.db'}"
            submitted = run([RAY, "submit", "--no-config-cache", "--disable-usage-stats", cluster_file, *SWEEP[:1],
                             "--", *SWEEP[1:], "--address", "auto", "--storage", storage, "--tracking-uri", tracking],
                            timeout=540, log=procs.log("ray-submit"), env=env, cwd=REPO)
            assert "2 trials, 0 failed" in submitted.stdout, submitted.stdout[-4000:]
            # The driver joined the cluster that `ray up` started (`--address auto`), not a private one.
            assert f"127.0.0.1:{gcs}" in submitted.stdout
            assert (home / "decay_rate.py").is_file()  # `ray submit` copied the one script to the head's home
            where = run([RAY, "exec", "--no-config-cache", cluster_file,
                         'python -c "import sweep, sys; print(sweep.__file__, sys.executable)"'],
                        timeout=120, log=procs.log("ray-exec"), env=env, cwd=REPO)
            # The login shell's python is the node's venv, with this package installed into it.
            assert f"{home}/slt-sweep/.venv/lib/{PY_DIR}/site-packages/sweep/__init__.py" in where.stdout
            check_sweep(storage, tracking)
            run([RAY, "down", "-y", cluster_file], timeout=180, log=procs.log("ray-down"), env=env, cwd=REPO)
        finally:
            procs.stop_all()  # sshd, its sessions and the launcher's ssh masters, before the account goes
            if control is not None:
                shutil.rmtree(control, ignore_errors=True)
                with contextlib.suppress(OSError):
                    control.parent.rmdir()  # only if no other cluster's sockets are in it
    print(f"ray submit path: {time.monotonic() - started:.0f} s")


# ---------------------------------------------------------- (d) the compose topology as local processes

def test_compose_topology_as_local_processes(tmp_path, procs, scratch):
    """docker-compose.yml's services, one process each: PostgreSQL, `mlflow server` on it with the
    compose file's own flags and environment, a Ray head and a Ray worker node sharing one storage
    path, and the demo sweep submitted to the head with the MLflow server as tracking URI.

    The two Ray nodes advertise 127.0.0.2: Ray rewrites 127.0.0.1/localhost to the machine's routable
    address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and that setting refuses worker nodes
    ("Multi-node Ray clusters are not supported"); 127.0.0.2 is loopback too and is kept as given."""
    needs_root()
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no `postgres` account (.ci/run installs the postgresql package)")
    if postgres_bin() is None:
        pytest.skip("PostgreSQL's initdb not found (.ci/run installs the postgresql package)")
    pytest.importorskip("psycopg2")
    import psycopg2

    started = time.monotonic()
    token = secrets.token_hex(32)
    compose = load_compose({"RAY_AUTH_TOKEN": token})
    mlflow_service = compose["services"]["mlflow"]
    mlflow_argv = [str(a) for a in mlflow_service["command"]]

    # PostgreSQL (the compose `postgres` service).
    pg_port, password = free_port(), secrets.token_hex(16)
    start_postgres(procs, scratch("slt-pg-") / "pg", pg_port, password)
    connection = psycopg2.connect(host="127.0.0.1", port=pg_port, user="postgres", password=password,
                                  dbname="postgres", connect_timeout=10)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("CREATE DATABASE mlflow")
    connection.close()

    # MLflow server (the compose `mlflow` service: its flags, on 127.0.0.1 and a free port).
    mlflow_port = free_port()
    scheme = option(mlflow_argv, "--backend-store-uri").split("://")[0]  # postgresql+psycopg2
    artifacts = tmp_path / "mlartifacts"
    argv = [VENV_BIN / "mlflow", "server",
            "--backend-store-uri", f"{scheme}://postgres:{password}@127.0.0.1:{pg_port}/mlflow",
            "--artifacts-destination", artifacts, "--host", "127.0.0.1", "--port", mlflow_port,
            "--workers", option(mlflow_argv, "--workers"), "--allowed-hosts", option(mlflow_argv, "--allowed-hosts")]
    env = {**os.environ, **{k: str(v) for k, v in mlflow_service["environment"].items()}}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    server = procs.start("mlflow", argv, env=env, cwd=tmp_path)
    health = f"http://127.0.0.1:{mlflow_port}/health"
    wait_until(lambda: http_status(health) == 200, timeout=240, what="the MLflow server", interval=1,
               check=lambda: procs.check_running(server, "mlflow"))
    # MLflow checks the Host header of API calls: the compose service name passes, others do not.
    api = f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(api, {"Host": "mlflow:5000"}) == 200  # how the Ray containers address it
    assert http_status(api, {"Host": "evil.example.com"}) == 403

    # Ray head and one worker node (the compose `ray-head` and `ray-worker` services), token auth on.
    ray_services = {name: compose["services"][name] for name in ("ray-head", "ray-worker")}
    node_env = {k: str(v) for k, v in ray_services["ray-head"]["environment"].items() if k.startswith("RAY_")}
    assert node_env["RAY_AUTH_TOKEN"] == token
    env = ray_env(node_env)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    node_ip = "127.0.0.2"
    gcs, dashboard = start_ray_head(procs, scratch("slt-rh-"), env, node_ip=node_ip, cpus=1)
    worker_tmp = scratch("slt-rw-")
    procs.markers.append(str(worker_tmp))
    worker = procs.start("ray-worker", ray_worker_argv(worker_tmp, node_ip=node_ip, cpus=1,
                                                       gcs_address=f"{node_ip}:{gcs}"), env=env, cwd=worker_tmp)

    def alive_nodes():
        nodes = ray_json(["list", "nodes", "--address", f"{node_ip}:{gcs}"], env)
        return [n for n in nodes if n["state"] == "ALIVE"] if len(nodes) == 2 else []

    nodes = wait_until(lambda: len(alive_nodes()) == 2 and alive_nodes(), timeout=180, what="two Ray nodes",
                       interval=2, check=lambda: procs.check_running(worker, "ray-worker"))
    assert {n["node_ip"] for n in nodes} == {node_ip}

    # The sweep, submitted to the head; Tune storage on the path both nodes share (compose: /ray_results).
    storage = tmp_path / "ray_results"
    tracking = f"http://127.0.0.1:{mlflow_port}"
    output = submit_job(procs, env, dashboard, "sweep-compose-topology", storage, tracking)
    assert "2 trials, 0 failed" in output
    assert f"MLflow UI:     open {tracking}/#/experiments/" in output  # the tracking server is the UI
    sweep = check_sweep(storage, tracking)

    # The two trials ran one on each node (1 CPU each, 2 concurrent trials). Ray's state API answers from
    # what it has gathered so far (on a loaded machine once with no actors at all): ask until it knows them.
    def trial_nodes():
        actors = ray_json(["list", "actors", "--address", f"{node_ip}:{gcs}", "--detail", "--limit", "1000"], env)
        # Ray names the class "ImplicitFunc" or "wrap_function.<locals>.ImplicitFunc", depending on how it pickled it
        seen = {a["node_id"] for a in actors if a["class_name"].rsplit(".", 1)[-1] == "ImplicitFunc"}
        return seen if len(seen) >= 2 else None

    found = wait_until(trial_nodes, timeout=60, interval=3, what="the two trials' actors on two nodes in Ray's state API")
    assert found == {n["node_id"] for n in nodes}

    # The runs live in PostgreSQL, and the trials' files went through the server to its artifact store.
    connection = psycopg2.connect(host="127.0.0.1", port=pg_port, user="postgres", password=password,
                                  dbname="mlflow", connect_timeout=10)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_uuid, status FROM runs")
        rows = dict(cursor.fetchall())
    connection.close()
    expected = {sweep["parent"].info.run_id, *(c.info.run_id for c in sweep["children"])}
    assert set(rows) == expected and set(rows.values()) == {"FINISHED"}
    stored = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert "metrics.json" in stored, stored
    print(f"compose topology path: {time.monotonic() - started:.0f} s")
