"""The written figures and report pages in a real browser: headless Chromium (Debian's `chromium`), offline.

`open_in_chromium(path)` loads a file:// page and returns the console errors and the rendered DOM. It
speaks the DevTools protocol over a pipe (--remote-debugging-pipe: NUL-separated JSON on fds 3/4), so
it needs no websocket client and tells console.error apart from console.log, which --enable-logging
cannot. Anything the page requests that is not a local file, and every resource that fails to load,
counts as an error: the pages must work with no network.
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboards.figures import write_figures
from dashboards.pareto import pareto_table
from test_figures import runs_table, stopped

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage",  # docker's 64 MB /dev/shm
         "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing leaves the machine even where there is a network
         "--remote-debugging-pipe"]
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome-error:")


class _Pipe:
    """The browser end of --remote-debugging-pipe: commands out on its fd 3, replies and events in on fd 4."""

    def __init__(self, to_browser: int, from_browser: int):
        self.out, self.ids, self.events = os.fdopen(to_browser, "wb", buffering=0), 0, queue.Queue()
        threading.Thread(target=self._read, args=(os.fdopen(from_browser, "rb", buffering=0),), daemon=True).start()

    def _read(self, stream):
        buffer = b""
        with stream:
            while chunk := stream.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self.events.put(json.loads(message))
        self.events.put(None)  # the browser closed its end

    def send(self, method: str, session: str | None = None, **params) -> int:
        self.ids += 1
        message = {"id": self.ids, "method": method, "params": params, **({"sessionId": session} if session else {})}
        self.out.write(json.dumps(message).encode() + b"\0")
        return self.ids

    def until(self, done, deadline: float, seen: list) -> dict:
        """Collect messages into `seen` until one satisfies `done`; TimeoutError at `deadline`."""
        while True:
            try:
                message = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("chromium did not answer in time") from None
            if message is None:
                raise RuntimeError("chromium closed the DevTools pipe")
            seen.append(message)
            if done(message):
                return message

    def drain(self, seen: list) -> None:
        """Whatever arrived but was not waited for (the browser has exited, so its end closes)."""
        try:
            while (message := self.events.get(timeout=5)) is not None:
                seen.append(message)
        except queue.Empty:
            pass

    def call(self, method: str, deadline: float, seen: list, session: str | None = None, **params) -> dict:
        sent = self.send(method, session, **params)
        reply = self.until(lambda m: m.get("id") == sent, deadline, seen)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]


def _errors(messages: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions, failed loads and requests to anything but local files."""
    errors = []
    for message in messages:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}".strip())
        elif method == "Network.requestWillBeSent" and not params["request"]["url"].startswith(LOCAL_SCHEMES):
            errors.append("remote request: " + params["request"]["url"])
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            errors.append(f"failed to load: {params['errorText']}")
    return errors


def open_in_chromium(path: Path, *, timeout: float = 60.0, settle: float = 0.5) -> tuple[list[str], str]:
    """Open a local page in headless Chromium: (console errors, the DOM after load + `settle` seconds).

    Errors are console.error/assert calls, uncaught exceptions, resources that failed to load, and any
    request that is not file:/data:/blob: (the pages must be self-contained). A fresh profile per call;
    the browser is closed, or its process group killed on timeout, so nothing is left running.
    """
    url = Path(path).resolve().as_uri()
    browser_reads, to_browser = os.pipe()
    from_browser, browser_writes = os.pipe()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    # sh moves the pipe ends from stdin/stdout to fds 3/4 and then becomes chromium (same PID)
    process = subprocess.Popen(["sh", "-c", 'exec 3<&0 4>&1 </dev/null >/dev/null; exec "$@"', "sh",
                                CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdin=browser_reads, stdout=browser_writes, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    os.close(browser_reads)
    os.close(browser_writes)
    pipe, seen = _Pipe(to_browser, from_browser), []
    deadline = time.monotonic() + timeout
    try:
        target = pipe.call("Target.createTarget", deadline, seen, url="about:blank")["targetId"]
        session = pipe.call("Target.attachToTarget", deadline, seen, targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            pipe.call(f"{domain}.enable", deadline, seen, session)
        start = len(seen)
        pipe.call("Page.navigate", deadline, seen, session, url=url)
        loaded = lambda m: m.get("method") == "Page.loadEventFired"  # noqa: E731
        if not any(map(loaded, seen[start:])):
            pipe.until(loaded, deadline, seen)
        time.sleep(settle)  # scripts that run after load (plotly draws during load; this is a margin)
        dom = pipe.call("Runtime.evaluate", deadline, seen, session, returnByValue=True,
                        expression="document.documentElement.outerHTML")["result"]["value"]
        pipe.send("Browser.close")
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the group this call started: browser, renderers, GPU
            process.wait()
        pipe.out.close()
        shutil.rmtree(profile, ignore_errors=True)
    pipe.drain(seen)
    return _errors(seen), dom


def chromium_pids() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "exe").startswith("/usr/lib/chromium/"):
                pids.add(int(proc.name))
        except OSError:
            pass
    return pids


@pytest.fixture(autouse=True)
def leaves_nothing_running():
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium (Debian: apt-get install chromium; .ci/run installs it)")
    before = chromium_pids()
    yield
    deadline = time.monotonic() + 10
    while (left := chromium_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"chromium processes left running: {sorted(left)}"


def sweep_frames() -> dict[str, pd.DataFrame]:
    """Small runs tables whose figures use every kind of layer: curves with seeds and single runs,
    dense baselines, sampled λ with the optimum, a (p, q) heatmap with an empty cell, a Pareto front."""
    rng = np.random.default_rng(0)
    p_rows = [{"method": m, "p": p, "seed": s, "test_accuracy": 0.9 - p / (3 + k) + rng.normal(0, 0.01)}
              for k, m in enumerate(("slt", "mpslt")) for p in (0.1, 0.5, 0.9) for s in range(3 if p < 0.9 else 1)]
    p_rows += [{"method": "snn", "seed": s, "test_accuracy": 0.91 + s / 100} for s in range(3)]
    decay_rows = [{"decay": d, "val_accuracy": 0.9 - (d - 0.6) ** 2, "test_accuracy": 0.89 - (d - 0.6) ** 2}
                  for d in rng.uniform(0.05, 0.95, 8)]
    grid_rows = [{"model": "spikformer-tiny", "method": "multisp-slt", "p": p, "q": q, "test_accuracy": 0.9 - p / 4 - q / 8}
                 for p in (0.2, 0.6) for q in (0.0, 0.3, 0.6) if (p, q) != (0.6, 0.6)]
    pareto_rows = [{"p": rng.uniform(0.1, 0.9), "T": int(rng.choice([1, 2])), "val_accuracy": rng.uniform(0.5, 0.9),
                    "test_accuracy": rng.uniform(0.5, 0.9), "energy_mj": rng.uniform(0.01, 0.1)} for _ in range(12)]
    pareto_rows.append(stopped({"val_accuracy": 0.99, "test_accuracy": 0.99, "energy_mj": 0.001}))
    return {"p": runs_table(p_rows), "decay": runs_table(decay_rows), "balance": runs_table(grid_rows),
            "pareto": runs_table(pareto_rows)}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """Figures of every sweep under ROOT/SWEEP/, and ROOT/index.html linking each HTML and showing each PNG."""
    root = tmp_path_factory.mktemp("site")
    figures = {}
    for sweep, runs in sweep_frames().items():
        pareto = pareto_table(runs, [("val_accuracy", "max"), ("energy_mj", "min")]) if sweep == "pareto" else None
        for figure in write_figures(runs, pareto, root / sweep):
            figures.setdefault(figure["name"], figure)
    items = "\n".join(f'<li><h2>{f["title"]}</h2><a href="{f["html"].relative_to(root)}">interactive</a>'
                      f'<img src="{f["png"].relative_to(root)}" alt="{f["name"]}" width="400"></li>'
                      for f in figures.values())
    (root / "index.html").write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>figures</title>'
                                     f"</head><body><ul>{items}</ul></body></html>", encoding="utf-8")
    return root, figures


SCATTER, HEATMAP = 'class="trace scatter', 'class="hm"'  # a drawn trace in plotly's SVG
RENDERED = {  # figure -> what its rendered plot must show: a drawn trace, legend and annotation texts
    "accuracy_vs_p": (SCATTER, "mpslt", "slt", "snn (no p), n=3"),
    "accuracy_vs_q": (SCATTER, "multisp-slt"),
    "accuracy_vs_T": (SCATTER, "mpslt"),
    "accuracy_vs_decay": (SCATTER, "optimum λ on validation =", "sampled λ"),
    "balance_pq": (HEATMAP, 'class="heatmap-label"', "n=1"),
    "pareto_accuracy_energy": (SCATTER, "Pareto front", "early-stopped"),
}


def test_every_figure_kind_is_written(site):
    assert set(site[1]) == set(RENDERED)


@pytest.mark.parametrize("name", RENDERED)
def test_plotly_figure_renders_offline_without_errors(site, name):
    errors, dom = open_in_chromium(site[1][name]["html"])
    assert errors == []
    assert 'class="main-svg"' in dom and "js-plotly-plot" in dom and "scatterlayer" in dom
    for text in RENDERED[name]:
        assert text in dom, f"{name}: {text!r} not rendered"


def test_index_page_loads_its_images_and_links(site):
    root, figures = site
    errors, dom = open_in_chromium(root / "index.html")
    assert errors == []  # a missing or broken image would be reported as a failed load
    for figure in figures.values():
        assert f'href="{figure["html"].relative_to(root)}"' in dom
        assert f'src="{figure["png"].relative_to(root)}"' in dom


def test_errors_remote_requests_and_missing_files_are_reported(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><html><body><img src='missing.png'><script>"
                    "console.log('fine'); console.error('boom');"
                    "fetch('https://cdn.plot.ly/plotly.min.js').catch(() => {});"
                    "setTimeout(() => { throw new Error('late'); }, 0);"
                    "</script><p id='x'>ok</p></body></html>")
    errors, dom = open_in_chromium(page)
    assert '<p id="x">ok</p>' in dom
    assert "console: boom" in errors and not any("fine" in e for e in errors)
    assert "remote request: https://cdn.plot.ly/plotly.min.js" in errors
    assert any(e.startswith("exception:") and "late" in e for e in errors)
    assert any("ERR_FILE_NOT_FOUND" in e for e in errors)


def test_slt_report_index_and_a_figure_render_in_chromium(tmp_path):
    """The real report of a sweep read back from MLflow: index.html and one plotly page, offline."""
    from mlflow.tracking import MlflowClient

    from dashboards.report import write_report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("decay", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, run_name="decay-demo").info.run_id
    for i, decay in enumerate([0.1, 0.3, 0.5, 0.7, 0.9]):
        run = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "trial_id": f"t{i}",
                                                  "status": "finished", "full_budget": "true",
                                                  "early_stopped": "false"}).info.run_id
        for key, value in {"method": "mpslt", "model": "vgg9", "dataset": "digits", "decay": decay, "p": 0.5}.items():
            client.log_param(run, key, str(value))
        client.log_metric(run, "val_accuracy", 0.5 + 0.3 * decay - 0.3 * decay ** 2)
        client.log_metric(run, "test_accuracy", 0.49 + 0.3 * decay - 0.3 * decay ** 2)
        client.log_metric(run, "energy_mj", 0.01 * (1 + decay))
        client.set_terminated(run, "FINISHED")
    report = write_report("decay", uri, tmp_path / "report")
    errors, dom = open_in_chromium(report["index"])
    assert errors == [] and "<img" in dom and 'href="pareto.csv"' in dom
    errors, dom = open_in_chromium(report["figures"][0]["html"])
    assert errors == [] and "main-svg" in dom and "js-plotly-plot" in dom


def test_slt_dashboard_optuna_serves_the_study_on_loopback(tmp_path):
    import socket
    import sys
    import urllib.request

    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="sweep-1", directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[0.8, 0.01]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "dashboard", "optuna", "--study", "sweep-1",
                               "--storage", storage, "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.time() + 60, None
        while time.time() < deadline and body is None:
            try:
                body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2).read())
            except OSError:
                time.sleep(0.5)
        assert body is not None, "optuna-dashboard did not answer"
        assert [s["study_name"] for s in body["study_summaries"]] == ["sweep-1"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
