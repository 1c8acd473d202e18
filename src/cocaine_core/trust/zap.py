"""ZAP: which CurveZMQ clients may connect to a node at all (``--client-keys``).

libzmq asks the ZAP handler of a socket's context (``inproc://zeromq.zap.01``) about every
CurveZMQ handshake once one is bound. So there is one handler per context, a thread answering
each request by the policy registered for the request's ZAP domain: a node with
``--client-keys`` registers its own domain; a domain without a policy (a node with ``--curve``
alone, in the same process) lets every client that knows the server key in, as libzmq does
without a handler. The thread starts with the first policy and stops, within
``STOP_TIMEOUT``, when the last one is removed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils import z85

from cocaine_core.errors import NodeError

log = logging.getLogger("cocaine.curve")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: Seconds the handler thread gets to stop.
STOP_TIMEOUT = 5.0
#: Least seconds between two log lines about refused clients (a flood logs a count).
REFUSED_LOG_EVERY = 5.0

#: Whether a client's Curve public key (32 raw bytes) may connect.
Policy = Callable[[bytes], bool]


class ZapHandler:
    """The ZAP handler of one context: a thread answering by the domain's policy."""

    def __init__(self, context: zmq.Context[Any]) -> None:
        self.context = context
        self.policies: dict[bytes, Policy] = {}
        #: Clients refused since the handler started.
        self.refused = 0
        self._unlogged = 0
        self._logged_at = 0.0
        self._wake = f"inproc://cocaine-zap-stop-{id(self)}"
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: str | None = None

    def start(self) -> None:
        """Bind the ZAP endpoint in a thread of its own; NodeError if another handler has it."""
        self._thread = threading.Thread(target=self._run, name="cocaine-zap", daemon=True)
        self._thread.start()
        if not self._started.wait(STOP_TIMEOUT) or self._error:
            self.stop()
            why = self._error or "the ZAP handler did not start"
            raise NodeError(f"cannot check --client-keys: {why} (another ZAP handler in this "
                            f"process?)")

    def stop(self) -> None:
        """Stop the thread (bounded by ``STOP_TIMEOUT``)."""
        thread, self._thread = self._thread, None
        if thread is None or not thread.is_alive():
            return
        wake = self.context.socket(zmq.PAIR)
        wake.setsockopt(zmq.LINGER, 0)
        try:
            wake.connect(self._wake)
            wake.send(b"stop", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        thread.join(STOP_TIMEOUT)
        wake.close(linger=0)
        if thread.is_alive():
            log.warning("the ZAP handler did not stop within %g s", STOP_TIMEOUT)

    def _run(self) -> None:
        rep = self.context.socket(zmq.REP)
        control = self.context.socket(zmq.PAIR)
        for sock in (rep, control):
            sock.setsockopt(zmq.LINGER, 0)
        try:
            rep.bind(ZAP_ENDPOINT)
            control.bind(self._wake)
        except zmq.ZMQError as exc:
            self._error = f"{ZAP_ENDPOINT}: {exc.strerror}"
            rep.close()
            control.close()
            self._started.set()
            return
        self._started.set()
        poller = zmq.Poller()
        poller.register(rep, zmq.POLLIN)
        poller.register(control, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if control in ready:
                    return
                if rep in ready:
                    rep.send_multipart(self.answer(rep.recv_multipart()))
        except zmq.ZMQError as exc:  # the context is being terminated
            log.debug("the ZAP handler stops: %s", exc)
        finally:
            rep.close()
            control.close()

    def answer(self, frames: list[bytes]) -> list[bytes]:
        """The reply to one ZAP request (RFC 27): 200 or 400, by the domain's policy."""
        if len(frames) < 6 or frames[0] != b"1.0":
            return [b"1.0", frames[1] if len(frames) > 1 else b"", b"500",
                    b"malformed ZAP request", b"", b""]
        request_id, domain, address, mechanism = frames[1], frames[2], frames[3], frames[5]
        policy = self.policies.get(domain)
        if policy is None:
            return [b"1.0", request_id, b"200", b"OK", b"", b""]
        key = frames[6] if mechanism == b"CURVE" and len(frames) > 6 else b""
        if len(key) == 32 and policy(key):
            return [b"1.0", request_id, b"200", b"OK", z85.encode(key), b""]
        self._refused(address, key)
        return [b"1.0", request_id, b"400", b"this client's key is not let in", b"", b""]

    def _refused(self, address: bytes, key: bytes) -> None:
        self.refused += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= REFUSED_LOG_EVERY:
            what = z85.encode(key).decode() if len(key) == 32 else "(no Curve key)"
            log.warning("refused a client from %s: its Curve key %s is not let in (not in "
                        "--client-keys; on a cluster link, not the cluster's key)%s",
                        address.decode("ascii", "replace") or "?", what,
                        f" ({self._unlogged - 1} more refused since the last such line)"
                        if self._unlogged > 1 else "")
            self._unlogged, self._logged_at = 0, now


_handlers: dict[int, ZapHandler] = {}
_lock = threading.Lock()


def register(context: zmq.Context[Any], domain: str, policy: Policy) -> None:
    """Check every Curve client of sockets with ZAP ``domain`` in ``context`` by ``policy``."""
    with _lock:
        handler = _handlers.get(id(context))
        if handler is None:
            handler = ZapHandler(context)
            handler.start()
            _handlers[id(context)] = handler
        handler.policies[domain.encode()] = policy


def unregister(context: zmq.Context[Any], domain: str) -> None:
    """Forget ``domain``'s policy; the last one stops the context's handler."""
    with _lock:
        handler = _handlers.get(id(context))
        if handler is None:
            return
        handler.policies.pop(domain.encode(), None)
        if not handler.policies:
            del _handlers[id(context)]
            handler.stop()


def refused(context: zmq.Context[Any]) -> int:
    """Clients the context's handler has refused (0 without one)."""
    handler = _handlers.get(id(context))
    return handler.refused if handler is not None else 0
