"""What the ``native-sink`` driver publishes through: the ``publish`` endpoint's check, the
PUB socket (shared by the tasks and versions of one app that name the same endpoint), and a
log that says a repeated thing once in a while instead of once per job.

One PUB socket per (node, app, endpoint): two tasks of an app may publish on one address
(subscribers tell them apart by topic), and during a redeploy the new version takes over the
old one's socket, so subscribers stay connected and the address is never re-bound. A socket
is closed when its last holder lets it go (the app has stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from typing import Any

import zmq

from cocaine_core.errors import NodeError
from cocaine_core.paths import check_ipc_path
from cocaine_core.schema import Invalid, show

#: Longest ipc path the kernel accepts (``sun_path`` is 108 bytes with its terminating NUL).
IPC_PATH_MAX = 107
EXAMPLE = "tcp://127.0.0.1:5555 or ipc:///tmp/results.sock"
#: Seconds a bind keeps retrying an address in use (a socket just closed by this node is
#: released by ZeroMQ's I/O thread a moment later); a real conflict is reported after that.
BIND_RETRY = 1.0
#: Milliseconds a closing PUB socket keeps trying to deliver what it has queued.
LINGER_MS = 1000


def publish_endpoint(value: Any) -> str:
    """A ZeroMQ endpoint to bind a PUB socket on: ``tcp://HOST:PORT`` (port 0 or ``*``:
    any free port) or ``ipc://PATH`` (an absolute path, or ``@name`` for an abstract
    socket)."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"must be a ZeroMQ endpoint such as {EXAMPLE}, got {show(value)}")
    scheme, sep, address = value.partition("://")
    if sep and scheme == "inproc":
        raise Invalid(f"inproc:// is reachable only inside the node's own process: use "
                      f"tcp:// or ipc:// (such as {EXAMPLE}), got {show(value)}")
    if not sep or scheme not in ("tcp", "ipc"):
        raise Invalid(f"must be a ZeroMQ endpoint starting with tcp:// or ipc:// (such as "
                      f"{EXAMPLE}), got {show(value)}")
    if scheme == "tcp":
        host, colon, port = address.rpartition(":")
        if not colon or not host or not (
                port == "*" or (port.isdigit() and 0 <= int(port) < 65536)):
            raise Invalid(f"must be tcp://HOST:PORT with a port from 0 to 65535 (0 or *: "
                          f"any free port), got {show(value)}")
        return value
    if not address:
        raise Invalid(f"needs a path after ipc://, got {show(value)}")
    if not address.startswith(("/", "@")):
        raise Invalid(f"the ipc path must be absolute (ipc:///path), or @name for an "
                      f"abstract socket: a relative one would depend on the node's working "
                      f"folder; got {show(value)}")
    if len(address.encode()) > IPC_PATH_MAX:
        raise Invalid(f"the ipc path is {len(address.encode())} bytes long; the system allows "
                      f"{IPC_PATH_MAX}: use a shorter path")
    return value


def _any_port(address: str) -> bool:
    return address.startswith("tcp://") and address.rsplit(":", 1)[-1] in ("0", "*")


class Publisher:
    """A bound PUB socket and how many drivers hold it."""

    def __init__(self, key: tuple[str, ...], sock: zmq.Socket[bytes], bound: str,
                 hwm: int) -> None:
        self.key = key
        self.sock = sock
        #: The endpoint bound (a port 0 or ``*`` resolved).
        self.bound = bound
        self.hwm = hwm
        #: The app instances (``AppInfo.instance``) holding it, once per holder.
        self.holders: list[str] = []
        self.closed = False

    def send(self, topic: bytes, chunk: bytes) -> None:
        """Publish ``[topic][chunk]`` without ever blocking: a subscriber whose queue is at
        the high-water mark misses it (ZeroMQ's rule for PUB). Raises ``zmq.ZMQError``."""
        self.sock.send_multipart([topic, chunk], zmq.NOBLOCK)


_publishers: dict[tuple[str, ...], Publisher] = {}


async def acquire(node: str, app: str, instance: str, address: str, hwm: int,
                  owner: str) -> Publisher:
    """The PUB socket of ``app`` on ``address``: the one already bound for that app, or a new
    one bound now (an ``address`` with any port is never shared). ``instance``: the run of
    the app asking (``AppInfo.instance``); ``hwm``: its messages queued per subscriber.

    :raises NodeError: naming ``owner`` (the task) and the endpoint, if it cannot be bound,
        or if another task of the same run of the app binds it with another ``hwm``.
    """
    key = (node, app, address)
    publisher = None if _any_port(address) else _publishers.get(key)
    if publisher is not None and publisher.hwm != hwm:
        if instance in publisher.holders:
            raise NodeError(f"{owner}: publish {address} is shared with another task of this "
                            f"app whose backlog is {publisher.hwm}, not {hwm}: give the tasks "
                            f"that publish on one endpoint the same backlog")
        # A new version of the app changed it: subscribers that connect from now on get it.
        publisher.sock.setsockopt(zmq.SNDHWM, hwm)
        publisher.hwm = hwm
    if publisher is None:
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
        try:
            sock.setsockopt(zmq.LINGER, LINGER_MS)
            sock.setsockopt(zmq.SNDHWM, hwm)
            bound = await _bind(sock, address, owner)
        except BaseException:
            sock.close(linger=0)
            raise
        publisher = Publisher(key, sock, bound, hwm)
        if not _any_port(address):
            _publishers[key] = publisher
    publisher.holders.append(instance)
    return publisher


def release(publisher: Publisher, instance: str) -> None:
    """Let go of ``publisher`` (held by a task of ``instance``); the last holder closes its
    socket."""
    if instance in publisher.holders:
        publisher.holders.remove(instance)
    if publisher.holders or publisher.closed:
        return
    publisher.closed = True
    if _publishers.get(publisher.key) is publisher:
        del _publishers[publisher.key]
    with contextlib.suppress(zmq.ZMQError):
        publisher.sock.close()


async def _bind(sock: zmq.Socket[bytes], address: str, owner: str) -> str:
    if address.startswith("ipc://"):
        # libzmq unlinks the path before binding: never let it delete a file that is not a
        # stale socket, nor anything in the node's own folders.
        check_ipc_path(address[len("ipc://"):], owner)
    give_up = time.monotonic() + BIND_RETRY
    while True:
        try:
            sock.bind(address)
            break
        except zmq.ZMQError as exc:
            if exc.errno == errno.EADDRINUSE and time.monotonic() < give_up:
                await asyncio.sleep(0.05)
                continue
            if exc.errno == errno.EADDRINUSE:
                raise NodeError(f"{owner}: cannot bind publish {address}: the address is "
                                f"already in use; stop whatever listens there or choose "
                                f"another endpoint in the manifest") from None
            raise NodeError(f"{owner}: cannot bind publish {address}: "
                            f"{exc.strerror}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT) or address
