"""A headless Chromium session driven over the DevTools protocol: load a page, wait for what it renders,
run JavaScript in it, take a screenshot (for pages served on 127.0.0.1, e.g. the MLflow UI)."""

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from test_slow_report_browser import CHROMIUM, FLAGS, _errors, _Pipe

# the same flags, except that 127.0.0.1 resolves (only loopback: nothing else leaves the machine)
LOOPBACK_FLAGS = [f"{flag}, EXCLUDE 127.0.0.1" if flag.startswith("--host-resolver-rules=") else flag for flag in FLAGS]


class BrowserSession:
    """`with BrowserSession() as page: page.open(url); page.wait_for(js); page.screenshot(path)`; the browser's
    process group is stopped on exit, whatever happened."""

    def __init__(self, width: int = 1600, height: int = 1000, timeout: float = 120.0):
        self.width, self.height, self.timeout = width, height, timeout

    def __enter__(self):
        browser_reads, to_browser = os.pipe()
        from_browser, browser_writes = os.pipe()
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.process = subprocess.Popen(["sh", "-c", 'exec 3<&0 4>&1 </dev/null >/dev/null; exec "$@"', "sh",
                                         CHROMIUM, *LOOPBACK_FLAGS, f"--user-data-dir={self.profile}",
                                         f"--window-size={self.width},{self.height}", "about:blank"],
                                        stdin=browser_reads, stdout=browser_writes, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        os.close(browser_reads)
        os.close(browser_writes)
        self.pipe, self.seen = _Pipe(to_browser, from_browser), []
        self.deadline = time.monotonic() + self.timeout
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self._call(f"{domain}.enable", session=self.session)
        self._call("Emulation.setDeviceMetricsOverride", session=self.session, width=self.width, height=self.height,
                   deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc):
        try:
            self.pipe.send("Browser.close")
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001 (closing is best effort; the group is killed below)
            pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.pipe.out.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _call(self, method: str, session: str | None = None, **params) -> dict:
        return self.pipe.call(method, self.deadline, self.seen, session, **params)

    def open(self, url: str) -> None:
        self._call("Page.navigate", session=self.session, url=url)

    def evaluate(self, expression: str):
        reply = self._call("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:80]}...: {reply['exceptionDetails'].get('text')}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 60.0):
        """Poll a JavaScript expression until it is truthy; returns its value (AssertionError on timeout)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        text = self.evaluate("document.body ? document.body.innerText.slice(0, 3000) : ''")
        raise AssertionError(f"timed out waiting for {what}; the page shows:\n{text}")

    def text(self) -> str:
        return self.evaluate("document.body.innerText")

    def screenshot(self, path: Path) -> None:
        data = self._call("Page.captureScreenshot", session=self.session, format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def errors(self) -> list[str]:
        return _errors(self.seen)
