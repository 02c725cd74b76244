"""Headless Chromium driven through the Chrome DevTools Protocol, for clicks in the UI tests.

``--dump-dom`` loads one URL; some pages only show what a test needs after a click (the
Prefect UI's flow-run page resets its ``?tab=`` query to ``Logs`` on a fresh load, before
the run is fetched). :class:`Browser` starts Chromium with ``--remote-debugging-port`` on
127.0.0.1 (it can reach 127.0.0.1 only) and :class:`Page` evaluates JavaScript in a tab,
clicks elements and waits for what the page shows, over the ``websockets`` package (a test
extra).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

#: Flags of a headless Chromium that can reach 127.0.0.1 only.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)  # fmt: skip


class Page:
    """One tab: JavaScript in it, and waiting for what it shows."""

    def __init__(self, ws_url: str) -> None:
        self._ws: ClientConnection = connect(ws_url, proxy=None, max_size=None)
        self._id = 0

    def close(self) -> None:
        self._ws.close()

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """A DevTools command; its result (events that arrive meanwhile are dropped)."""
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def click(self, element: str) -> None:
        """Click the element a JavaScript expression gives as a user would: the mouse
        pressed and released at its centre (a trusted event: links open, tabs switch)."""
        box = self.evaluate(
            f"(() => {{ const e = {element}; e.scrollIntoView({{block: 'center'}}); "
            "const r = e.getBoundingClientRect(); "
            "return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def wait_for(self, expression: str, *, timeout: float = 90.0, what: str = "") -> Any:
        """Poll ``expression`` (JSON-able: ``!!element``, not the element) until it is
        truthy; its value. AssertionError with the page's address and text when it never
        is."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(RuntimeError):  # a page still loading
                value = self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                text = self.evaluate("location.href + ' :: ' + (document.body?.innerText ?? '')")
                raise AssertionError(f"{what or expression} not within {timeout} s: {text[:3000]}")
            time.sleep(0.5)


class Browser:
    """A headless Chromium with its DevTools endpoint on 127.0.0.1 (a free port)."""

    def __init__(self, executable: str, user_data: Path, *, startup_s: float = 60.0) -> None:
        user_data.mkdir(parents=True, exist_ok=True)
        port_file = user_data / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={user_data}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + startup_s
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"chromium did not open its DevTools port ({port_file})")
            time.sleep(0.2)
        self.endpoint = f"http://127.0.0.1:{port_file.read_text().split()[0]}"
        self._pages: list[Page] = []

    def targets(self) -> list[dict[str, Any]]:
        """The open tabs: ``{"url", "webSocketDebuggerUrl", ...}``."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.endpoint}/json/list", timeout=30) as response:
            return [t for t in json.load(response) if t.get("type") == "page"]

    def page(self, url_prefix: str = "", *, timeout: float = 60.0) -> Page:
        """A connection to the (first) tab whose address starts with ``url_prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [t for t in self.targets() if t.get("url", "").startswith(url_prefix)]
            if found:
                page = Page(found[0]["webSocketDebuggerUrl"])
                self._pages.append(page)
                return page
            if time.monotonic() > deadline:
                raise AssertionError(f"no tab at {url_prefix}: {self.targets()}")
            time.sleep(0.5)

    def close(self) -> None:
        for page in self._pages:
            with contextlib.suppress(Exception):
                page.close()
        for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)
            try:
                self._proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
