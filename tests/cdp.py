"""A headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: the
browser reads commands on fd 3 and answers on fd 4, NUL-separated JSON), so tests can click, type
and download without a websocket client or a browser-automation package.

    with Browser(chromium, downloads=tmp) as b:
        b.open(report.as_uri(), ready="document.body.dataset.rendered")
        b.click("document.getElementById('download')")
        path = b.download("decisions.jsonl")
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

_EXEC = ("import os, sys; a, b = os.dup(int(sys.argv[1])), os.dup(int(sys.argv[2])); "
         "os.dup2(a, 3); os.dup2(b, 4); os.set_inheritable(3, True); os.set_inheritable(4, True); "
         "os.execv(sys.argv[3], sys.argv[3:])")


class Browser:
    def __init__(self, chromium: str, downloads: Path, timeout: float = 60.0):
        self.downloads, self.timeout, self._id, self._buf = downloads, timeout, 0, b""
        # Chromium's helper processes may still write into the profile as it is removed: ignore that
        self._profile = tempfile.TemporaryDirectory(prefix="mamori-chromium-", ignore_cleanup_errors=True)
        to_browser, self._w = os.pipe()
        self._r, from_browser = os.pipe()

        self._log = open(Path(self._profile.name) / "stderr.txt", "wb")  # noqa: SIM115  (closed in __exit__)
        # a tiny Python puts the pipe ends where Chromium expects them (fds 3 and 4), then becomes Chromium
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _EXEC, str(to_browser), str(from_browser), chromium, "--headless",
             "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}",
             "--window-size=1280,1600", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self._log,
            pass_fds=(to_browser, from_browser), start_new_session=True)
        os.close(to_browser)
        os.close(from_browser)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # Chromium and its helper processes (renderer, GPU, ...)
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        os.close(self._w)
        os.close(self._r)
        self._log.close()
        self._profile.cleanup()

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._r], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._r, 65536) if ready else b""
            if not chunk:
                log = (Path(self._profile.name) / "stderr.txt").read_text(errors="replace")[-3000:]
                raise TimeoutError(f"Chromium did not answer ({self._proc.poll()}): {log}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        out: dict[str, Any] = json.loads(raw)
        return out

    def send(self, method: str, *, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command (to the page when `session`, or the browser) and return its result."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._w, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            log = (Path(self._profile.name) / "stderr.txt").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"Chromium exited ({self._proc.poll()}): {log}") from None
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        out = self.send("Runtime.evaluate", session=self._session, expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def open(self, url: str, *, ready: str) -> None:
        """Load `url` and wait until the expression `ready` is truthy."""
        self.send("Page.navigate", session=self._session, url=url)
        deadline = time.monotonic() + self.timeout
        while not self.eval(f"(() => {{ try {{ return !!({ready}); }} catch (e) {{ return false; }} }})()"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page not ready: {ready}")
            time.sleep(0.1)

    def click(self, element: str) -> None:
        """A mouse click (press and release) in the middle of the element the expression names."""
        x, y = self.eval(f"(() => {{ const e = {element}; e.scrollIntoView({{block: 'center'}}); "
                         "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=self._session, type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def type(self, element: str, text: str) -> None:
        """Click into the element and type `text`."""
        self.click(element)
        self.send("Input.insertText", session=self._session, text=text)

    def download(self, name: str) -> Path:
        """Wait for the finished download `name` in the downloads folder."""
        path, deadline = self.downloads / name, time.monotonic() + self.timeout
        while not path.is_file() or any(self.downloads.glob("*.crdownload")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no download {name} in {self.downloads}")
            time.sleep(0.1)
        return path
