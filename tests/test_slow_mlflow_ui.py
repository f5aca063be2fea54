"""What a researcher sees in the MLflow UI over a real demo sweep: `mlflow server` on 127.0.0.1, the URL the sweep
prints, headless Chromium (slow)."""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import runrecord
from browser_session import BrowserSession
from launch_support import free_port
from test_slow_report_browser import leaves_nothing_running  # noqa: F401 (autouse: no chromium left running)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = os.environ.get("SLT_MLFLOW_SCREENSHOT")  # where to keep the screenshot (docs/mlflow-ui.png is one)

EXPANDER = 'button[data-component-id*="runnamecellrenderer"]'  # the "+" beside a parent run's name (MLflow 3.17)
# the MLflow Assistant side panel takes a third of the page; a user closes it once
CLOSE_ASSISTANT = ("Array.from(document.querySelectorAll('button')).filter(b => b.getAttribute('aria-label') === 'Close')"
                   ".forEach(b => b.click())")


def _parent_row(name: str) -> str:
    return (f"Array.from(document.querySelectorAll('[role=row]')).find(r => r.innerText.includes({name!r}))")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A demo decay-rate sweep (3 trials, 2 epochs) recorded in its own SQLite database; its stdout."""
    folder = tmp_path_factory.mktemp("ui-sweep")
    done = subprocess.run([sys.executable, str(REPO / "sweep" / "decay_rate.py"), "--profile", "demo", "--quiet",
                           "--set", "num_samples=3", "--set", "base.epochs=2", "--storage", str(folder / "results"),
                           "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--reports", str(folder / "reports")],
                          cwd=folder, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, done.stdout


@pytest.fixture
def server(sweep):
    """`mlflow server` over the sweep's database on a free loopback port, stopped (its process group) after."""
    folder, _ = sweep
    port = free_port()
    process = subprocess.Popen([shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow", "server",
                                "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--host", "127.0.0.1",
                                "--port", str(port), "--workers", "1"], cwd=folder, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not answer /health")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_the_sweep_records_what_the_ui_shows(sweep):
    folder, _ = sweep
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name("decay_rate")
    assert experiment.tags[runrecord.EXPERIMENT_KIND_TAG] == runrecord.MODEL_TRAINING_KIND
    client = MlflowClient()
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if runrecord.PARENT_TAG not in r.data.tags]
    children = [r for r in runs if runrecord.PARENT_TAG in r.data.tags]
    assert len(children) == 3 and parent.info.run_name.startswith("decay_rate demo 20")
    for child in children:  # 'mpslt λ=0.32 s0': the method, the searched λ, the seed
        decay = float(child.data.params["decay"])
        assert child.info.run_name == f"mpslt λ={decay:.3g} s0"
        (data,) = child.inputs.dataset_inputs
        assert data.dataset.name == "digits 16px" and len(data.dataset.digest) == 16
        assert '"train": 1295, "validation": 143, "test": 359' in data.dataset.profile
    note = parent.data.tags[runrecord.NOTE_TAG]
    assert "objectives: val_accuracy:max" in note and "best on validation: run `mpslt λ=" in note
    assert "its test_accuracy" in note and "report: `" in note
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/index.html", "report/pareto.csv", "report/accuracy_vs_decay.png"} <= artifacts


def test_the_printed_url_opens_the_runs_with_their_columns_and_the_trials_under_the_sweep(sweep, server, tmp_path):
    folder, stdout = sweep
    (url,) = [line.split("then open ", 1)[1] for line in stdout.splitlines() if "then open " in line]
    assert url.startswith("http://127.0.0.1:5000/#/experiments/") and "workflowType=machine_learning" in url
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("decay_rate").experiment_id])
    (parent,) = [r for r in runs if runrecord.PARENT_TAG not in r.data.tags]
    with BrowserSession(width=1920, height=900) as page:
        page.open(url.replace("http://127.0.0.1:5000", server))
        page.wait_for(f"!!({_parent_row(parent.info.run_name)})", "the sweep's parent run in the runs table",
                      timeout=180)
        page.evaluate(CLOSE_ASSISTANT)
        text = page.text()
        assert "Runs" in text and "Detect Issues" not in text and "No data available" not in text  # not GenAI
        headers = page.evaluate(  # left to right as drawn (the grid positions its cells absolutely)
            "Array.from(document.querySelectorAll('[role=columnheader]')).filter(h => h.getBoundingClientRect().width > 0)"
            ".sort((a, b) => a.getBoundingClientRect().left - b.getBoundingClientRect().left).map(h => h.innerText)")
        headers = list(dict.fromkeys(h.strip() for h in headers if h.strip()))  # shown order: run, dataset, params, metrics
        shown = [h for h in headers if h in ("Run Name", "Dataset", "decay", "val_accuracy", "test_accuracy")]
        assert shown == ["Run Name", "Dataset", "decay", "val_accuracy", "test_accuracy"], " / ".join(headers)
        assert {"method", "seed", "energy_mj", "epoch"} <= set(headers)
        assert "mpslt λ=" not in text  # the trials are under the collapsed parent
        page.evaluate(f"{_parent_row(parent.info.run_name)}.querySelector({EXPANDER!r}).click()")
        page.wait_for("document.body.innerText.split('mpslt λ=').length - 1 >= 3", "the three trials, expanded",
                      timeout=60)
        assert page.text().count("digits 16px") >= 3  # each trial's dataset input
        page.screenshot(tmp_path / "mlflow-ui.png")
        if SCREENSHOT:
            shutil.copy(tmp_path / "mlflow-ui.png", SCREENSHOT)
    assert (tmp_path / "mlflow-ui.png").stat().st_size > 20_000
