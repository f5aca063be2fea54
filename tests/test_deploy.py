"""Deployment files, checked without servers: docker-compose.yml against the Compose Specification and
the team topology, deploy/Dockerfile, and deploy/cluster.yaml through Ray's own cluster-config checks.
The launch paths themselves run in tests/test_slow_launch.py."""

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from launch_support import (CLUSTER_FILE, DOCKERFILE, REPO, SHARED, interpolate, load_compose, option,
                            required_compose_variables)

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RAY_SERVICES = ("ray-head", "ray-worker")


def pinned(package: str) -> str:
    for requirement in PYPROJECT["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        if re.sub(r"\[.*\]", "", name).lower() == package:
            return version
    raise AssertionError(f"{package} is not pinned in pyproject.toml")


def installed_packages() -> list[str]:
    """Top-level packages that pyproject.toml installs (slt*, trainables*, ... -> slt, trainables, ...)."""
    return sorted({p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]})


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


# ------------------------------------------------------------------------------------ docker compose

def test_compose_file_is_valid_against_the_compose_specification(compose):
    schema_file = SHARED / "schemas" / "compose-spec.json"
    if not schema_file.is_file():
        pytest.skip(f"the Compose Specification schema is not at {schema_file} (it ships in ../shared)")
    import jsonschema

    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_schema_check_catches_a_broken_file():
    """The validation above has teeth: a wrong type is reported."""
    schema_file = SHARED / "schemas" / "compose-spec.json"
    if not schema_file.is_file():
        pytest.skip(f"the Compose Specification schema is not at {schema_file}")
    import jsonschema

    broken = load_compose()
    broken["services"]["ray-head"]["shm_size"] = [2]
    assert list(jsonschema.Draft7Validator(json.loads(schema_file.read_text())).iter_errors(broken))


def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}|${UNSET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET}|$$HOME", env) == "x|d|d|||$HOME"
    assert interpolate("${UNSET:?message with spaces}", env, required="R") == "R"
    assert interpolate({"a": ["${SET:+alt}", 3]}, env) == {"a": ["alt", 3]}


def test_compose_topology(compose):
    services = compose["services"]
    assert {"postgres", "mlflow", "ray-head", "ray-worker", "optuna-dashboard"} <= set(services)

    # Only loopback ports on the host.
    published = {name: s.get("ports", []) for name, s in services.items()}
    for name, ports in published.items():
        for port in ports:
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port!r}"
    assert any(p.endswith(":5000") for p in published["mlflow"])
    assert any(p.endswith(":8265") for p in published["ray-head"])
    assert not published["postgres"] and not published["ray-worker"]

    # Ray: shared memory, one storage volume at one path on every node, the tracking server, workers.
    mounts = {}
    for name in RAY_SERVICES:
        service = services[name]
        assert service["command"][:2] == ["ray", "start"]
        assert re.fullmatch(r"\d+(\.\d+)?[kmg]b?", str(service["shm_size"]).lower()), service["shm_size"]
        assert service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        mounts[name] = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    assert "/ray_results" in mounts["ray-head"]
    assert mounts["ray-head"]["/ray_results"] == mounts["ray-worker"]["/ray_results"]
    assert mounts["ray-head"]["/ray_results"] in compose["volumes"]
    assert "--head" in services["ray-head"]["command"]
    assert option(services["ray-worker"]["command"], "--address") == "ray-head:6379"
    assert int(services["ray-worker"]["deploy"]["replicas"]) >= 1
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["ray-head"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    # The job API executes code: the Ray services require a shared token that has no default.
    assert "RAY_AUTH_TOKEN" in required_compose_variables()
    for name in RAY_SERVICES:
        assert services[name]["environment"]["RAY_AUTH_MODE"] == "token"

    # MLflow: PostgreSQL backend, proxied artifacts on a volume, no job runner, the service name allowed.
    mlflow = services["mlflow"]
    argv = [str(a) for a in mlflow["command"]]
    assert argv[:2] == ["mlflow", "server"]
    backend = option(argv, "--backend-store-uri")
    assert backend.startswith("postgresql+psycopg2://") and "@postgres:5432/" in backend  # psycopg2 is pinned
    artifacts = option(argv, "--artifacts-destination")
    assert artifacts and any(v.split(":")[1] == artifacts for v in mlflow["volumes"])
    assert str(mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]).lower() == "false"
    allowed = option(argv, "--allowed-hosts").split(",")
    assert "mlflow" in allowed and "mlflow:5000" in allowed
    assert option(argv, "--port") == "5000" and option(argv, "--workers") == "1"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["postgres"]["environment"]["POSTGRES_DB"] == backend.rsplit("/", 1)[1]

    # optuna-dashboard only on request.
    assert services["optuna-dashboard"]["profiles"] == ["dashboards"]
    for name, service in services.items():
        assert "profiles" not in service or name == "optuna-dashboard"

    # Our services are built from deploy/Dockerfile.
    for name in ("mlflow", "ray-head", "ray-worker", "optuna-dashboard"):
        build = services[name]["build"]
        assert (REPO / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_tracking_uri_matches_the_mlflow_service(compose):
    mlflow_port = option([str(a) for a in compose["services"]["mlflow"]["command"]], "--port")
    for name in RAY_SERVICES:
        assert compose["services"][name]["environment"]["MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow_port}"


# ------------------------------------------------------------------------------------------ Dockerfile

def test_dockerfile_builds_the_pinned_package_on_the_matching_ray_image():
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    python = PYPROJECT["project"]["requires-python"]
    assert ">=3.11" in python and "<3.12" in python
    assert base == f"rayproject/ray:{pinned('ray')}-py311-cpu"
    assert "-c constraints.txt" in text and "download.pytorch.org/whl/cpu" in text
    sources = set()  # COPY [--flags] SRC... DEST
    for line in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", text, re.M):
        sources.update(line.split()[:-1])
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    for package in installed_packages():
        assert package in sources, f"the Dockerfile does not copy the package {package}"
    assert "/ray_results" in text  # the volume's mount point, owned by the image's user
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# ---------------------------------------------------------------------------------- deploy/cluster.yaml

@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_FILE.read_text())


def test_cluster_yaml_passes_rays_own_validation(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(cluster)  # what `ray up` / `ray submit` do before anything else
    validate_config(prepared)
    assert prepared["provider"]["type"] == "local"
    assert prepared["available_node_types"]["local.cluster.node"]["max_workers"] == len(
        cluster["provider"]["worker_ips"])


def test_cluster_yaml_installs_this_package_on_every_node(cluster):
    provider, auth = cluster["provider"], cluster["auth"]
    assert provider["head_ip"] and isinstance(provider["worker_ips"], list)
    assert auth["ssh_user"] and auth["ssh_private_key"]
    mounts = cluster["file_mounts"]
    remote_root = "~/slt-sweep"
    # Every installed package and every file the install needs goes to every node.
    needed = [*installed_packages(), "pyproject.toml", "constraints.txt", "install.sh", "README.md"]
    for name in needed:
        assert mounts.get(f"{remote_root}/{name}") == f"./{name}", f"{name} is not mounted on the nodes"
        assert (REPO / name).exists()
    assert not any(Path(src).name == ".venv" or src in (".", "./") for src in mounts.values())
    setup = cluster["setup_commands"]
    assert any("./install.sh" in c and remote_root in c for c in setup)  # pinned: constraints.txt
    assert any(".venv/bin" in c and ".bashrc" in c for c in setup)  # `ray submit` runs the login shell's python
    head = " ".join(cluster["head_start_ray_commands"])
    assert "ray start --head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--dashboard-host=127.0.0.1" in head
    assert any("$RAY_HEAD_IP" in c for c in cluster["worker_start_ray_commands"])


def test_submitted_script_imports_the_installed_package():
    """`ray submit` copies only the script: it must import `sweep` as an installed package, with no
    path tricks relative to its own location."""
    script = (REPO / "sweep" / "decay_rate.py").read_text()
    assert "from app.sweep import main" in script
    assert "sys.path" not in script and "__file__" not in script


def test_launch_tests_cluster_yaml_is_deploy_cluster_yaml_on_one_machine(cluster, tmp_path):
    """tests/test_slow_launch.py runs `ray submit` with deploy/cluster.yaml re-pointed at 127.0.0.1:
    the same keys, mounts and PATH setup, a valid config for Ray."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    from launch_support import local_cluster_config

    config = local_cluster_config(cluster_name="slt-test", user="someone", key=tmp_path / "key", ssh_port=2222,
                                  token_file=tmp_path / "token", gcs_port=6380, dashboard_port=8266,
                                  system_python="/usr/bin/python3.11")
    validate_config(prepare_config(config))
    assert set(config) == set(cluster)
    assert set(config["file_mounts"]) == set(cluster["file_mounts"])
    assert config["setup_commands"][-1] == cluster["setup_commands"][-1]  # the venv on the login PATH
    assert "-W %h:2222" in config["auth"]["ssh_proxy_command"]
    assert any("--port=6380" in c and "--dashboard-port=8266" in c for c in config["head_start_ray_commands"])
