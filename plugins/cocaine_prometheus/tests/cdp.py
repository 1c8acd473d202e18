"""A small Chrome DevTools Protocol client for the console's tests: starts a headless
Chromium, opens a page, evaluates JavaScript in it, and collects what its console logged.

Chromium writes the port it took (``--remote-debugging-port=0``) into ``DevToolsActivePort``
in its profile folder; the browser's WebSocket is at that port and path. Pages are attached in
flat mode, so one socket carries every command (``sessionId`` picks the page).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

#: Flags for a quiet, throwaway headless browser (we are root in a container: no sandbox).
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-sync",
         "--disable-background-networking", "--disable-component-update",
         "--disable-dev-shm-usage", "--mute-audio", "--remote-debugging-port=0")


def find_chromium() -> str | None:
    """The Chromium binary, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CdpError(Exception):
    """A DevTools command failed, or the page threw."""


class Browser:
    """One Chromium process and the DevTools socket to it."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.binary, self.profile = binary, profile
        self.process: subprocess.Popen[bytes] | None = None
        self.socket: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._exits = contextlib.ExitStack()  # the socket, closed by kill()
        #: Events received (method, params, sessionId), in order.
        self.events: list[tuple[str, dict[str, Any], str | None]] = []

    def start(self, timeout: float = 60.0) -> Browser:
        """Start Chromium and connect to it."""
        log = open(self.profile.parent / f"{self.profile.name}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # Its temporary files (a singleton socket's folder) go with the profile: killed,
            # it removes none of them.
            env={**os.environ, "TMPDIR": str(self.profile)})
        log.close()
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while True:
            lines = port_file.read_text().split() if port_file.exists() else []
            if len(lines) >= 2:
                break
            if self.process.poll() is not None:
                raise CdpError(f"chromium exited ({self.process.returncode}): "
                               f"{self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise CdpError(f"chromium did not open its DevTools port in {timeout:g} s")
            time.sleep(0.05)
        self.socket = self._exits.enter_context(connect(
            f"ws://127.0.0.1:{lines[0]}{lines[1]}", open_timeout=timeout,
            max_size=64 * 1024 * 1024, proxy=None))
        return self

    def log_text(self) -> str:
        """What Chromium printed."""
        path = self.profile.parent / f"{self.profile.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Run a DevTools command; its result (events arriving meanwhile are kept)."""
        assert self.socket is not None, "the browser is not started"
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"{method}: no answer in {timeout:g} s")
            reply = json.loads(self.socket.recv(timeout=left))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if "method" in reply:
                self.events.append((reply["method"], reply.get("params", {}),
                                    reply.get("sessionId")))

    def open(self, url: str, width: int = 1280, height: int = 800) -> Page:
        """A new tab on ``url``, its console and errors collected."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, session["sessionId"])
        page.send("Runtime.enable")
        page.send("Log.enable")
        page.send("Page.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1,
                   "mobile": width < 700})
        page.send("Page.navigate", {"url": url})
        return page

    def kill(self) -> None:
        """Close the socket and kill Chromium's process group (it started it, by its pid)."""
        with contextlib.suppress(Exception):
            self._exits.close()
        if self.process is not None:  # its helpers too, even if the browser itself died
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


class Page:
    """One tab, by its DevTools session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A DevTools command for this tab."""
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Evaluate ``expression`` until it is truthy; its value (CdpError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except CdpError:
                value = None  # the page is still loading
            if value:
                return value
            time.sleep(0.05)
        raise CdpError(f"{expression!r} was not true within {timeout:g} s (last: {value!r})")

    def problems(self) -> list[str]:
        """What the page's console reported as errors, and what it threw (CSP violations
        are logged as errors)."""
        found = []
        for method, params, session in self.browser.events:
            if session != self.session:
                continue
            if method == "Runtime.exceptionThrown":
                found.append(str(params.get("exceptionDetails")))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(str(params["entry"].get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(str(params.get("args")))
        return found

    def screenshot(self, path: Path) -> None:
        """Save the page as PNG (for a person to look at)."""
        import base64

        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
