"""``cocaine top``: a live view of a node's apps, or of every node of its cluster.

A ``Poller`` per node asks it for its ``info`` every interval, in a thread of its own, so a
node that is slow or gone never holds the others' rows (it shows as a line saying why, and is
asked again at the next interval). The screen is drawn from the pollers' last two answers by
``top_view``; in the terminal's alternate screen, redrawn when an answer comes and at least
every interval; Ctrl-C or ``q`` ends it. ``--once`` (and stdout that is not a terminal) prints
one frame as plain text instead: every poller's first two answers, one interval apart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cocaine_core.cli import top_view
from cocaine_core.cli.options import KeyOption, NodeOption, ServerKeyOption, WaitOption, client
from cocaine_core.errors import CocaineError, ServiceError
from cocaine_core.protocol import DEFAULT_ENDPOINT

if TYPE_CHECKING:
    from cocaine_core.client import Client

#: Most nodes of a cluster watched at once (each has a thread and a connection).
MAX_NODES = 64
#: Seconds between looks at the keyboard and at new answers.
TICK = 0.1
#: Codes that mean the node answered, but not with its info (not "unreachable").
ANSWERED = {400, 401, 403}


class Poller:
    """Asks one node for its ``info`` (and, for ``--cluster``, its cluster's nodes) every
    ``interval`` seconds in a thread of its own; keeps the last two answers, or why the last
    ask failed (then the earlier answers are dropped: rates start again when it is back)."""

    def __init__(self, endpoint: str, connect: Callable[[str], Client], interval: float, *,
                 cluster: bool = False) -> None:
        self.endpoint = endpoint
        self.interval = interval
        self._connect = connect
        self._cluster = cluster
        self._lock = threading.Lock()
        self._answers: list[tuple[dict[str, Any], float]] = []
        self._error: str | None = None
        #: The last ``cluster-nodes`` answer, or why there is none (``--cluster``).
        self.cluster: dict[str, Any] | None = None
        self.cluster_error: str | None = None
        #: Asks done so far (answered or not): a change means something new to draw.
        self.asked = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"cocaine-top {endpoint}")

    def start(self) -> Poller:
        """Start asking."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop asking (an ask under way ends within the client's wait, in the background)."""
        self._stop.set()

    @property
    def settled(self) -> bool:
        """Whether there is enough to show: two answers (rates), or an error."""
        with self._lock:
            return self._error is not None or (
                len(self._answers) >= 2 and (not self._cluster or self.cluster is not None
                                             or self.cluster_error is not None))

    @property
    def error(self) -> str | None:
        """Why the last ask failed (None: it was answered)."""
        return self._error

    def snapshots(self, seen: str | None = None, name: str | None = None) -> top_view.Snapshots:
        """What is known now, for ``top_view``."""
        with self._lock:
            answers, error = list(self._answers), self._error
        current = answers[-1] if answers else None
        previous = answers[-2] if len(answers) > 1 else None
        return top_view.Snapshots(
            endpoint=self.endpoint, current=current[0] if current else None,
            previous=previous[0] if previous else None,
            elapsed=current[1] - previous[1] if current and previous else None,
            error=error, seen=seen, name=name)

    def _run(self) -> None:
        node: Client | None = None
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    node = node or self._connect(self.endpoint)
                    self._ask(node)
                except Exception as exc:
                    if node is not None:
                        with contextlib.suppress(Exception):
                            node.close()
                    node = None
                    with self._lock:
                        self._answers.clear()
                        self._error = why(exc)
                        self.asked += 1
                next_at = max(next_at + self.interval, time.monotonic())
                self._stop.wait(next_at - time.monotonic())
        finally:
            if node is not None:
                with contextlib.suppress(Exception):
                    node.close()

    def _ask(self, node: Client) -> None:
        info = node.control("info")
        at = time.monotonic()
        if not isinstance(info, dict):
            raise CocaineError("its info is not a map: is it a cocaine node?")
        nodes, cluster_error = None, None
        if self._cluster:
            try:
                nodes = node.control("cluster-nodes")
            except ServiceError as exc:
                cluster_error = exc.message
        with self._lock:
            self._answers = [*self._answers[-1:], (info, at)]
            self._error = None
            self.cluster, self.cluster_error = nodes, cluster_error
            self.asked += 1


def why(exc: BaseException) -> str:
    """An ask's failure in a few words, for the node's line."""
    if isinstance(exc, ServiceError):
        text = exc.message
        return f"error {exc.code}: {text}" if exc.code in ANSWERED else \
            f"node unreachable: {text}"
    if isinstance(exc, CocaineError):
        return f"node unreachable: {exc}"
    return f"node unreachable: {type(exc).__name__}: {exc}"


class Watch:
    """The pollers of one ``cocaine top``: the node given and, for ``--cluster``, every other
    node its cluster lists (started as they appear, stopped as they leave)."""

    def __init__(self, node: str, connect: Callable[[str], Client], interval: float,
                 cluster: bool) -> None:
        self.main = Poller(node, connect, interval, cluster=cluster).start()
        self.connect, self.interval, self.cluster = connect, interval, cluster
        self.peers: dict[str, Poller] = {}
        #: Cluster nodes not watched (past ``MAX_NODES``).
        self.unwatched = 0

    def nodes(self) -> tuple[str | None, list[top_view.Snapshots]]:
        """The cluster's name (``--cluster``) and each node's snapshots, the node given
        first; peers met for the first time get a poller."""
        if not self.cluster:
            return None, [self.main.snapshots()]
        view = self.main.cluster
        if view is None:
            name = f"(none: {self.main.cluster_error})" if self.main.cluster_error else "…"
            return name, [self.main.snapshots()]
        shown = [self.main.snapshots()]
        wanted: set[str] = set()
        others = [n for n in view.get("nodes") or [] if not n.get("self")]
        self.unwatched = max(0, len(others) - (MAX_NODES - 1))
        for entry in others[:MAX_NODES - 1]:
            endpoint = entry.get("endpoint")
            if not endpoint:
                shown.append(top_view.Snapshots(endpoint="?", name=entry.get("name"),
                                                error="its endpoint is not known yet"))
                continue
            wanted.add(endpoint)
            poller = self.peers.get(endpoint)
            if poller is None:
                poller = self.peers[endpoint] = Poller(endpoint, self.connect,
                                                       self.interval).start()
            shown.append(poller.snapshots(seen=entry.get("state"), name=entry.get("name")))
        for endpoint in set(self.peers) - wanted:
            self.peers.pop(endpoint).stop()
        return str(view.get("cluster")), shown

    @property
    def asked(self) -> int:
        """Asks done by every poller (a change means something new to draw)."""
        return self.main.asked + sum(p.asked for p in self.peers.values())

    def settled(self) -> bool:
        """Whether every node watched has been answered twice or has failed."""
        self.nodes()
        return self.main.settled and all(p.settled for p in self.peers.values())

    def stop(self) -> None:
        """Stop every poller."""
        self.main.stop()
        for poller in self.peers.values():
            poller.stop()


def top(
    apps: Annotated[list[str] | None, typer.Argument(
        metavar="APP", help="Show only these apps (shell patterns: 'web*').")] = None,
    node: NodeOption = DEFAULT_ENDPOINT,
    interval: Annotated[float, typer.Option(
        min=0.2, max=60, help="Seconds between looks at the node (0.2 to 60).")] = 1.0,
    cluster: Annotated[bool, typer.Option(
        "--cluster", help="Show every node of the node's cluster (each asked at its own "
                          "endpoint, with the same --key and --server-key).")] = False,
    once: Annotated[bool, typer.Option(
        "--once", help="Print one frame as text and exit (rates over one --interval); "
                       "what happens when stdout is not a terminal.")] = False,
    wait: WaitOption = 5.0,
    key: KeyOption = None,
    server_key: ServerKeyOption = None,
) -> None:
    """A live view of the node's apps: rate, errors, latency, queue and slaves.

    Refreshed every --interval; Ctrl-C or q quits. A node that cannot be reached says why
    and is asked again at each interval.
    """
    patterns = tuple(apps or ())
    client(node, wait, key, server_key).close()  # makes the user's key at the first use

    def connect(endpoint: str) -> Client:
        return client(endpoint, wait, key, server_key)

    watch = Watch(node, connect, interval, cluster)
    try:
        if once or not sys.stdout.isatty():
            _print_once(watch, interval, wait, patterns)
        else:
            _live(watch, interval, patterns)
    finally:
        watch.stop()


def _print_once(watch: Watch, interval: float, wait: float, patterns: tuple[str, ...]) -> None:
    """One frame as text, once every node answered twice (or failed); exit code 1 if the
    node given could not be asked."""
    deadline = time.monotonic() + 2 * (wait + interval) + (wait + interval if watch.cluster
                                                           else 0) + 1
    while not watch.settled() and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster, nodes = watch.nodes()
    typer.echo(top_view.plain(nodes, _width(), cluster=cluster, patterns=patterns))
    if watch.main.error is not None:
        raise typer.Exit(1)


def _width() -> int:
    from cocaine_core.cli.views import width

    return width()


def _live(watch: Watch, interval: float, patterns: tuple[str, ...]) -> None:
    """Draw in the alternate screen until Ctrl-C or ``q``; the terminal is restored. Drawn
    when an answer comes, when the terminal's size changes, and at least every interval."""
    from rich.console import Console

    console = Console(highlight=False)
    status = f"every {interval:g}s · q quits"
    drawn_at, drawn, size = 0.0, -1, console.size
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        with _keys() as read_key, console.screen(hide_cursor=True) as screen:
            try:
                while True:
                    now, resized = time.monotonic(), console.size != size
                    if watch.asked != drawn or now - drawn_at >= interval or resized:
                        drawn, drawn_at, size = watch.asked, now, console.size
                        cluster, nodes = watch.nodes()
                        screen.update(top_view.render(nodes, size.width, size.height,
                                                      cluster=cluster, patterns=patterns,
                                                      status=status))
                    if "q" in read_key(TICK).lower():
                        break
            except KeyboardInterrupt:
                pass
            finally:  # a second Ctrl-C must not cut the terminal's restoring short
                signal.signal(signal.SIGINT, signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGINT, interrupt)


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], str]]:
    """A reader of the keys pressed (waiting at most the seconds given; "" if none): stdin in
    cbreak mode (no echo, Ctrl-C still interrupts), restored at the end. Without a terminal on
    stdin, it only waits."""
    try:
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    except (ImportError, OSError, ValueError, AttributeError):
        saved = None
    if saved is None:
        def wait_only(seconds: float) -> str:
            time.sleep(seconds)
            return ""

        yield wait_only
        return
    import select

    def read(seconds: float) -> str:
        ready, _, _ = select.select([fd], [], [], seconds)
        return os.read(fd, 32).decode(errors="ignore") if ready else ""

    tty.setcbreak(fd, termios.TCSANOW)
    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
