"""Scenario 7, chaos: slaves and templates killed, stopped and OOM-killed under steady load.

For each pool setting (pool-min 0, 2 and 4 at pool-limit 4, and concurrency 4 at pool-min 2;
``--quick``: pool-min 0 only) and round (2; ``--quick``: 1), one ``cocaine run`` hosts an
app whose ``echo`` takes 10 ms, with heartbeat-timeout 1 s, startup-timeout 2 s and, where
the memory controller can be had, a memory limit of 128 MiB (``engine.resource-limits``).
Three closed-loop clients call it, one request at a time each (pausing 20 ms after an error,
as a client that retries would), while these faults are injected in turn:

1. ``kill -9`` of the template;
2. ``SIGSTOP`` of a busy slave for 3 s (past heartbeat-timeout and the engine's one-second
   look at its CPU time), then ``SIGCONT``;
3. ``kill -9`` of the spare (a slave in state ``spare`` in ``info``), where there is one;
4. ``kill -9`` of a busy slave;
5. an OOM kill: a request whose handler sends a chunk (so it is not retried) and then
   allocates past the memory limit;
6. ``SIGSTOP`` of the template for 3.5 s (past startup-timeout), after which a busy slave
   and the spare are killed, so that the pool must grow from the stopped template; then
   ``SIGCONT``.

Faults 3 to 6 crash 5 slaves at most, and the template's kill up to 5 (a pool of 3 and its
spare, or of 4): each group starts once the engine's restart-intensity window (5 crashes in 10 s) is
empty, so that each fault is measured on its own rather than with the crash back-off of the
ones before it (docs/engine.md, "restart intensity").

Measured for each fault, from every client's answers (in the order they arrived):

- **serving again**: seconds from the fault's *end* (the kill, the ``SIGCONT``, or the OOM
  request's error answer) to the first success that begins 10 successes in a row; the target
  is 2 s. Watched for 15 s at most.
- the **errors** answered from the fault's start until 2.5 s after its end (and 0.5 s past
  serving again, if later; ``--quick``: 0.5 s past serving again), by code (``no answer``:
  none within 10 s);
- whether ``info`` (read every 0.1 s) ever showed the app **broken** (it must not);
- **leaked** processes: a few seconds after, every live process of the node's templates
  (current and former) and slaves must be the one template or a slave ``info`` lists; what
  is still unknown after 5 s is leaked;
- how long until the pool had as many ready slaves as before the fault, the node's log lines
  and its CPU share while it lasted (in the JSON's details).

Last, ``cocaine run`` is stopped with SIGTERM: its exit code, how long it took, and whether
any of its processes was left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bench.loadgen import CHOKE, CHUNK, ERROR, REQUEST
from bench.nodes import CocaineRun, write_app
from bench.processes import cpu_seconds
from bench.results import ScenarioResult
from bench.session import Bench
from cocaine_core.backends.process import node_processes

NAME = "chaos"
TITLE = "Chaos: templates and slaves killed, stopped, OOM-killed under load"
APP_NAME = "chaos"
CLIENTS = 3
JOB_SECONDS = 0.01
HEARTBEAT_TIMEOUT = 1.0
STARTUP_TIMEOUT = 2.0
#: Past heartbeat-timeout, and past the second the engine then watches a silent slave's CPU.
SLAVE_STOP = HEARTBEAT_TIMEOUT + 2.0
#: Past startup-timeout, so that the slaves the pool asks of the stopped template are given up.
TEMPLATE_STOP = STARTUP_TIMEOUT + 1.5
MEMORY_LIMIT = "128M"
#: The target: serving again within this many seconds of the fault's end.
TARGET = 2.0
#: Successes in a row that count as serving again.
STREAK = 10
#: Seconds watched after a fault's end at least (``--quick``: after serving again), and at
#: most (waiting to serve again).
OBSERVE = 2.5
OBSERVE_QUICK = 0.5
OBSERVE_MAX = 15.0
#: Seconds a process of the app may stay unknown to ``info`` before it counts as leaked.
LEAK_WAIT = 5.0
#: A client's longest wait for an answer, and its pause after an error.
ANSWER_TIMEOUT = 10.0
ERROR_PAUSE = 0.02
#: Seconds each setting's load runs before the first fault; most a fault waits to settle.
WARM_UP = 1.0
SETTLE = 20.0
#: Rounds of every setting (``--rounds`` lowers it; ``--quick``: one).
ROUNDS = 2
OK = 0
NO_ANSWER = -1
#: One answer to a client: sent and answered (monotonic seconds), code, error message.
Answer = tuple[float, float, int, str]

APP = f"""\
import time


def echo(request):
    time.sleep({JOB_SECONDS})
    return request.data


def hog(request):
    # A chunk first: the job has sent something, so its slave's death is not retried.
    yield b"allocating"
    hoard = []
    for _ in range(64):  # 1 GiB at most, far past the app's memory limit
        hoard.append(b"\\x01" * (16 << 20))
    yield str(len(hoard)).encode()
"""
TASKS = {"echo": {"type": "native-server"}, "hog": {"type": "native-server"}}


@dataclass(frozen=True)
class PoolSetting:
    """One pool setting the faults are tried with."""

    pool_min: int
    pool_limit: int
    concurrency: int = 1

    @property
    def label(self) -> str:
        """``min 2, limit 4`` (``, conc 4``)."""
        extra = f", conc {self.concurrency}" if self.concurrency > 1 else ""
        return f"min {self.pool_min}, limit {self.pool_limit}{extra}"

    @property
    def slug(self) -> str:
        """For folder names."""
        return f"min{self.pool_min}-limit{self.pool_limit}-conc{self.concurrency}"

    def engine(self, memory: bool) -> dict[str, Any]:
        """The manifest's ``engine`` section."""
        keys: dict[str, Any] = {
            "pool-min": self.pool_min, "pool-limit": self.pool_limit,
            "concurrency": self.concurrency, "heartbeat-timeout": HEARTBEAT_TIMEOUT,
            "startup-timeout": STARTUP_TIMEOUT, "termination-timeout": 1.0}
        if memory:
            limits = {"memory.limit_in_bytes": MEMORY_LIMIT}
            if _swap_on():  # else the kernel may swap the hog out instead of killing it
                limits["memory.memsw.limit_in_bytes"] = MEMORY_LIMIT
            keys["resource-limits"] = {"memory": limits}
        return keys


SETTINGS = (PoolSetting(0, 4), PoolSetting(2, 4), PoolSetting(2, 4, concurrency=4),
            PoolSetting(4, 4))
QUICK_SETTINGS = (PoolSetting(0, 4),)


class NotApplicable(Exception):
    """A fault that cannot be injected in this setting (no spare at pool-limit, no memory
    controller): skipped, with the reason."""


@dataclass
class Injected:
    """When a fault began and ended (monotonic seconds), and what happened on the way."""

    start: float
    end: float
    note: str = ""


@dataclass
class Outcome:
    """What one fault did to the app in one setting and round."""

    fault: str
    setting: str
    round: int
    skipped: str = ""
    #: Seconds from the fault's end to steady success (None: not within OBSERVE_MAX).
    recovery: float | None = None
    errors: Counter[str] = field(default_factory=Counter)
    #: The first message of each error code.
    messages: dict[str, str] = field(default_factory=dict)
    broken: bool = False
    leaked: list[int] = field(default_factory=list)
    #: Seconds from the fault's end until the pool had its ready slaves back (None: not seen).
    pool_back: float | None = None
    log_lines: int = 0
    node_cpu_share: float | None = None
    fault_seconds: float = 0.0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """For the JSON."""
        return {"fault": self.fault, "setting": self.setting, "round": self.round,
                "skipped": self.skipped, "recovery_s": _round(self.recovery),
                "errors": dict(self.errors), "messages": self.messages,
                "broken": self.broken, "leaked": self.leaked,
                "pool_back_s": _round(self.pool_back), "log_lines": self.log_lines,
                "node_cpu_share": _round(self.node_cpu_share),
                "fault_s": _round(self.fault_seconds), "note": self.note}


# -- the load: a few closed-loop clients ----------------------------------------------------------


class Callers:
    """``CLIENTS`` threads, each a DEALER with one ``echo`` in flight at a time, recording
    every answer as (sent, answered, code, message): code 0 for success, else the error's
    code (or NO_ANSWER) and its message."""

    def __init__(self, endpoint: str, clients: int = CLIENTS) -> None:
        self.endpoint = endpoint
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, name=f"chaos-client-{i}",
                                          daemon=True) for i in range(clients)]

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(ANSWER_TIMEOUT + 5)

    def _client(self) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock: zmq.Socket[bytes] | None = None
        rid = 0
        while not self._stop.is_set():
            if sock is None:
                sock = context.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(self.endpoint)
            rid += 1
            sent = time.monotonic()
            sock.send_multipart([msgpack.packb([REQUEST, rid, APP_NAME, "echo", None]),
                                 b"x" * 100])
            answer = self._answer(sock, rid, sent + ANSWER_TIMEOUT)
            if answer is None:
                if self._stop.is_set():
                    break
                answer = (NO_ANSWER, f"no answer within {ANSWER_TIMEOUT:g} s")
                sock.close(linger=0)  # a late answer must not be taken for the next one
                sock = None
            code, message = answer
            self.answers.append((sent, time.monotonic(), code, message))
            if code != OK:
                self._stop.wait(ERROR_PAUSE)
        if sock is not None:
            sock.close(linger=0)

    def _answer(self, sock: zmq.Socket[bytes], rid: int,
                deadline: float) -> tuple[int, str] | None:
        while time.monotonic() < deadline and not self._stop.is_set():
            if not sock.poll(100):
                continue
            header = msgpack.unpackb(sock.recv_multipart()[0])
            if header[1] != rid or header[0] == CHUNK:
                continue
            if header[0] == CHOKE:
                return OK, ""
            if header[0] == ERROR:
                return int(header[2]), str(header[3]) if len(header) > 3 else ""
        return None

    def since(self, moment: float) -> list[Answer]:
        """Answers that arrived at or after ``moment``, in the order they arrived."""
        return sorted((a for a in list(self.answers) if a[1] >= moment), key=lambda a: a[1])

    def serving_since(self, moment: float) -> float | None:
        """When the first success of ``STREAK`` in a row arrived at or after ``moment``."""
        run, first = 0, 0.0
        for _sent, answered, code, _message in self.since(moment):
            if code != OK:
                run = 0
                continue
            if run == 0:
                first = answered
            run += 1
            if run >= STREAK:
                return first
        return None

    def steady(self) -> bool:
        """Whether the last ``STREAK`` answers succeeded and the latest is recent."""
        last = sorted(list(self.answers)[-4 * STREAK:], key=lambda a: a[1])[-STREAK:]
        return (len(last) == STREAK and all(a[2] == OK for a in last)
                and time.monotonic() - last[-1][1] < 0.5)


# -- the app as ``info`` shows it, read in the background -----------------------------------------


@dataclass
class Sample:
    """One reading of the app's ``info``."""

    at: float
    state: str
    ready: int


class Monitor:
    """Reads the app's ``info`` every 0.1 s from a thread: its states and ready slaves."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-monitor", daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from cocaine_core.client import Client

        with Client(self.endpoint, wait=5) as client:
            while not self._stop.wait(0.1):
                try:
                    app = client.control("info")["apps"][APP_NAME]
                except Exception:
                    self.samples.append(Sample(time.monotonic(), "no answer", 0))
                    continue
                pool = app["pool"]
                self.samples.append(Sample(time.monotonic(), app["state"],
                                           pool["idle"] + pool["busy"]))

    def between(self, start: float, end: float) -> list[Sample]:
        """The readings taken from ``start`` to ``end``."""
        return [s for s in list(self.samples) if start <= s.at <= end]

    def ready_before(self, moment: float) -> int | None:
        """Ready slaves at the last reading before ``moment``."""
        before = [s for s in list(self.samples) if s.at < moment]
        return before[-1].ready if before else None


# -- the node's processes, from /proc -------------------------------------------------------------


def app_processes(node_pid: int) -> dict[int, int]:
    """Live templates and slaves of the node ``node_pid``, each with its parent's pid."""
    return node_processes(node_pid)


def _memory_unavailable() -> str | None:
    """Why an app cannot have a memory limit here (None: it can)."""
    try:
        from cocaine_cgroups.hierarchy import V1, detect
    except ImportError:
        return "cocaine-cgroups is not installed (engine.resource-limits)"
    layout = detect()
    hierarchy = layout.hierarchy_of("memory")
    if hierarchy is None:
        return layout.missing_reason("memory")
    if hierarchy.version == V1 and os.geteuid() != 0:
        return "the memory controller is on cgroup v1, where only root makes groups"
    return None


def _swap_on() -> bool:
    try:
        return len(Path("/proc/swaps").read_text().splitlines()) > 1
    except OSError:
        return False


# -- one setting: a node, its load, the faults in turn --------------------------------------------


@dataclass(frozen=True)
class Fault:
    """A fault: its label, how it is injected, and whether it waits for a quiet crash window."""

    label: str
    inject: Callable[[Chaos], Injected]
    quiet_first: bool = False


class Chaos:
    """One node under load, and the faults injected into it one after another."""

    def __init__(self, bench: Bench, node: CocaineRun, setting: PoolSetting, round_index: int,
                 callers: Callers, monitor: Monitor, memory_problem: str | None) -> None:
        self.bench = bench
        self.node = node
        self.setting = setting
        self.round = round_index
        self.callers = callers
        self.monitor = monitor
        self.memory_problem = memory_problem

    def app(self) -> dict[str, Any]:
        """The app's ``info`` now."""
        return self.node.info(APP_NAME)

    # -- finding victims

    def _poll(self, find: Callable[[], Any], seconds: float) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            value = find()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.02)

    def busy_slave(self) -> int:
        """The pid of a ready slave with a job in flight."""
        def find() -> int | None:
            busy = [s["pid"] for s in self.app()["slaves"]
                    if s["state"] == "ready" and s["jobs"] and s["pid"]]
            return busy[0] if busy else None
        pid = self._poll(find, 5.0)
        if pid is None:
            raise RuntimeError("no busy slave under load for 5 s")
        return int(pid)

    def spares(self, wait: float = 0.0) -> list[int]:
        """Pids of the slaves ``info`` shows as ``spare``."""
        return self._poll(lambda: [s["pid"] for s in self.app()["slaves"]
                                   if s["state"] == "spare" and s["pid"]], wait) or []

    def template(self) -> int:
        """The pid of the app's template (the node's child among its processes)."""
        def find() -> int | None:
            templates = [p for p, parent in app_processes(self.node.pid).items()
                         if parent == self.node.pid]
            return templates[0] if len(templates) == 1 else None
        pid = self._poll(find, 10.0)
        if pid is None:
            raise RuntimeError("no single template process found within 10 s")
        return int(pid)

    def unknown_processes(self) -> list[int]:
        """The node's processes that are neither its one template nor a slave ``info``
        lists (scanned first, so a process ``info`` no longer lists has exited by then)."""
        processes = app_processes(self.node.pid)
        known = {s["pid"] for s in self.app()["slaves"] if s["pid"]}
        templates = sorted(p for p, parent in processes.items() if parent == self.node.pid)
        others = [p for p, parent in processes.items()
                  if parent != self.node.pid and p not in known]
        return sorted(others + templates[1:])

    # -- running one fault

    def settle(self) -> bool:
        """Wait until the app runs with its warm slaves, the load succeeds steadily and no
        process is unknown; False if that did not happen within ``SETTLE`` seconds."""
        def settled() -> bool:
            app = self.app()
            pool = app["pool"]
            return (app["state"] == "running" and self.callers.steady()
                    and pool["idle"] + pool["busy"] >= max(1, self.setting.pool_min)
                    and not self.unknown_processes())
        return bool(self._poll(settled, SETTLE))

    def quiet_crashes(self) -> bool:
        """Wait until no crash is within the restart-intensity window."""
        return bool(self._poll(lambda: self.app()["crashes"]["recent"] == 0, 15.0))

    def run(self, fault: Fault) -> Outcome:
        """Inject ``fault`` once the app is settled, and measure what it did."""
        outcome = Outcome(fault.label, self.setting.label, self.round)
        notes = []
        if not self.settle():
            notes.append(f"not settled after {SETTLE:g} s")
        if fault.quiet_first and not self.quiet_crashes():
            notes.append("crashes still recent after 15 s")
        log_before = _lines(self.node.log)
        cpu_before, cpu_at = cpu_seconds([self.node.pid]), time.monotonic()
        try:
            injected = fault.inject(self)
        except NotApplicable as exc:
            outcome.skipped = str(exc)
            return outcome
        if injected.note:
            notes.append(injected.note)
        outcome.fault_seconds = injected.end - injected.start
        serving = self._await_serving(injected.end)
        outcome.recovery = None if serving is None else max(0.0, serving - injected.end)
        watched_until = time.monotonic()
        outcome.node_cpu_share = ((cpu_seconds([self.node.pid]) - cpu_before)
                                  / max(1e-3, watched_until - cpu_at))
        for _sent, answered, code, message in self.callers.since(injected.start):
            if answered <= watched_until and code != OK:
                outcome.errors[_code_name(code)] += 1
                outcome.messages.setdefault(_code_name(code), message)
        outcome.leaked = self._leaks()
        readings = self.monitor.between(injected.start, time.monotonic())
        outcome.broken = any(s.state == "broken" for s in readings)
        before = self.monitor.ready_before(injected.start)
        back = [s.at for s in readings if s.at >= injected.end and before is not None
                and s.ready >= before]
        outcome.pool_back = max(0.0, back[0] - injected.end) if back else None
        outcome.log_lines = _lines(self.node.log) - log_before
        outcome.note = "; ".join(notes)
        return outcome

    def _await_serving(self, end: float) -> float | None:
        """When steady success began after ``end``; watch ``OBSERVE`` seconds at least."""
        observe = OBSERVE_QUICK if self.bench.settings.quick else OBSERVE
        while True:
            now = time.monotonic()
            serving = self.callers.serving_since(end)
            if serving is not None and now >= max(end + observe, serving + 0.5):
                return serving
            if now > end + OBSERVE_MAX:
                return serving
            time.sleep(0.05)

    def _leaks(self) -> list[int]:
        unknown = self._poll(lambda: not self.unknown_processes(), LEAK_WAIT)
        return [] if unknown else self.unknown_processes()


# -- the faults -----------------------------------------------------------------------------------


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def kill_template(chaos: Chaos) -> Injected:
    """kill -9 of the template: its slaves die with it, and the code is loaded again."""
    pid = chaos.template()
    start = time.monotonic()
    _signal(pid, signal.SIGKILL)
    return Injected(start, time.monotonic())


def stop_slave(chaos: Chaos) -> Injected:
    """SIGSTOP of a busy slave past heartbeat-timeout, then SIGCONT."""
    pid = chaos.busy_slave()
    start = time.monotonic()
    _signal(pid, signal.SIGSTOP)
    try:
        time.sleep(SLAVE_STOP)
        alive = pid in app_processes(chaos.node.pid)
    finally:
        _signal(pid, signal.SIGCONT)
    end = time.monotonic()
    return Injected(start, end, "" if not alive else f"slave {pid} not killed while stopped")


def kill_spare(chaos: Chaos) -> Injected:
    """kill -9 of the spare slave, if the pool has one."""
    spares = chaos.spares(wait=3.0)
    if not spares:
        reason = ("no spare: the pool is at pool-limit" if
                  chaos.setting.pool_min >= chaos.setting.pool_limit else
                  "no spare within 3 s")
        raise NotApplicable(reason)
    start = time.monotonic()
    _signal(int(spares[0]), signal.SIGKILL)
    return Injected(start, time.monotonic())


def kill_busy_slave(chaos: Chaos) -> Injected:
    """kill -9 of a slave with a job in flight."""
    pid = chaos.busy_slave()
    start = time.monotonic()
    _signal(pid, signal.SIGKILL)
    return Injected(start, time.monotonic())


def oom_kill(chaos: Chaos) -> Injected:
    """A request that allocates past the app's memory limit: the kernel kills its slave.
    The fault ends when its error answer arrives."""
    if chaos.memory_problem:
        raise NotApplicable(f"no memory limit: {chaos.memory_problem}")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(chaos.node.endpoint)
    try:
        start = time.monotonic()
        sock.send_multipart([msgpack.packb([REQUEST, 1, APP_NAME, "hog", None]), b""])
        while True:
            if not sock.poll(30_000):
                raise RuntimeError("the memory hog got no answer within 30 s")
            header = msgpack.unpackb(sock.recv_multipart()[0])
            if header[0] != CHUNK:
                break
        end = time.monotonic()
    finally:
        sock.close(linger=0)
    if header[0] == CHOKE:
        return Injected(start, end, "the hog was not killed: no memory limit in force")
    message = str(header[3]) if len(header) > 3 else ""
    note = "" if "out of memory" in message else f"the hog failed otherwise: {message[:120]}"
    return Injected(start, end, note)


def stop_template(chaos: Chaos) -> Injected:
    """SIGSTOP of the template past startup-timeout while the pool must grow (a busy slave
    and the spare are killed once it is stopped), then SIGCONT."""
    pid = chaos.template()
    start = time.monotonic()
    _signal(pid, signal.SIGSTOP)
    try:
        victims = [chaos.busy_slave(), *chaos.spares()]
        for victim in victims:
            _signal(int(victim), signal.SIGKILL)
        time.sleep(max(0.0, start + TEMPLATE_STOP - time.monotonic()))
    finally:
        _signal(pid, signal.SIGCONT)
    return Injected(start, time.monotonic(), f"{len(victims)} slave(s) killed meanwhile")


#: In this order: the template's kill first (up to 5 crashes), and the other crashes (at most
#: 5) once the restart-intensity window is empty again; the stopped slave is killed by the
#: engine, which is no crash.
FAULTS = (
    Fault("template kill -9", kill_template, quiet_first=True),
    Fault(f"slave SIGSTOP {SLAVE_STOP:g} s", stop_slave),
    Fault("spare kill -9", kill_spare, quiet_first=True),
    Fault("busy slave kill -9", kill_busy_slave),
    Fault("slave OOM kill", oom_kill),
    Fault(f"template SIGSTOP {TEMPLATE_STOP:g} s", stop_template),
)


# -- the scenario ---------------------------------------------------------------------------------


@dataclass
class Stopped:
    """How ``cocaine run`` ended on SIGTERM after a setting's faults."""

    setting: str
    round: int
    code: int | None
    seconds: float
    left: list[int]


def run(bench: Bench) -> ScenarioResult:
    """Every fault, under load, in every pool setting; ``ROUNDS`` rounds (one if quick)."""
    result = ScenarioResult(NAME, TITLE)
    settings = QUICK_SETTINGS if bench.settings.quick else SETTINGS
    rounds = 1 if bench.settings.quick else min(ROUNDS, bench.settings.rounds)
    memory_problem = _memory_unavailable()
    if memory_problem:
        result.skipped_parts["slave OOM kill"] = f"skipped: {memory_problem}"
    outcomes: list[Outcome] = []
    stops: list[Stopped] = []
    for round_index in range(rounds):
        for setting in settings:
            bench.say(f"  round {round_index + 1}/{rounds}: {setting.label}")
            with _node(bench, setting, round_index, memory_problem, stops) as node:
                outcomes.extend(_faults(bench, node, setting, round_index, memory_problem))
    _report(result, outcomes, stops, settings)
    result.details.update({
        "clients": CLIENTS, "job_s": JOB_SECONDS, "heartbeat_timeout_s": HEARTBEAT_TIMEOUT,
        "startup_timeout_s": STARTUP_TIMEOUT, "memory_limit": None if memory_problem
        else MEMORY_LIMIT, "streak": STREAK, "target_s": TARGET, "rounds": rounds,
        "outcomes": [o.as_dict() for o in outcomes],
        "stops": [asdict(s) for s in stops]})
    return result


@contextlib.contextmanager
def _node(bench: Bench, setting: PoolSetting, round_index: int, memory_problem: str | None,
          stops: list[Stopped]) -> Iterator[CocaineRun]:
    manifest = write_app(bench.subfolder(f"chaos/{setting.slug}-{round_index}"), APP, TASKS,
                         setting.engine(memory=memory_problem is None))
    node = CocaineRun(bench.group, manifest, name=APP_NAME).start()
    try:
        yield node
    finally:
        started = time.monotonic()
        code = bench.group.stop(node.process)
        seconds = time.monotonic() - started
        deadline = time.monotonic() + 5
        while app_processes(node.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        stops.append(Stopped(setting.label, round_index, code, round(seconds, 3),
                             sorted(app_processes(node.pid))))


def _faults(bench: Bench, node: CocaineRun, setting: PoolSetting, round_index: int,
            memory_problem: str | None) -> list[Outcome]:
    outcomes = []
    with Callers(node.endpoint) as callers, Monitor(node.endpoint) as monitor:
        time.sleep(WARM_UP)
        chaos = Chaos(bench, node, setting, round_index, callers, monitor, memory_problem)
        for fault in FAULTS:
            outcome = chaos.run(fault)
            bench.say(f"    {fault.label}: {_cell_recovery([outcome])}"
                      f"{'; ' + outcome.note if outcome.note else ''}")
            outcomes.append(outcome)
    return outcomes


def _report(result: ScenarioResult, outcomes: list[Outcome], stops: list[Stopped],
            settings: tuple[PoolSetting, ...]) -> None:
    labels = [s.label for s in settings]
    faults = [f.label for f in FAULTS]

    def cell(fault: str, setting: str) -> list[Outcome]:
        return [o for o in outcomes if o.fault == fault and o.setting == setting]

    for fault in faults:
        for setting in labels:
            measured = [o for o in cell(fault, setting) if not o.skipped]
            if measured:
                figure = result.figure(f"{fault}, {setting}: serving again after", "ms")
                for o in measured:
                    figure.add(1000 * (o.recovery if o.recovery is not None else OBSERVE_MAX))
    header = ["fault", *labels]
    result.tables.append((
        f"serving again: ms from the fault's end to {STREAK} successes in a row (worst "
        f"round; target {TARGET:g} s)", header,
        [[f, *(_cell_recovery(cell(f, s)) for s in labels)] for f in faults]))
    result.tables.append((
        "errors from the fault's start until 2.5 s after its end (or serving again), all "
        "rounds",
        header, [[f, *(_cell_errors(cell(f, s)) for s in labels)] for f in faults]))
    result.tables.append((
        "the app never broken, no process leaked; log: the node's lines (worst round)", header,
        [[f, *(_cell_health(cell(f, s)) for s in labels)] for f in faults]))
    result.tables.append((
        "ms from the fault's end until the pool had as many ready slaves as before (worst "
        "round; not seen: the load did not make it grow that far again)",
        header, [[f, *(_cell_pool(cell(f, s)) for s in labels)] for f in faults]))
    result.tables.append(("cocaine run on SIGTERM afterwards", ["", *labels], [[
        "exit, seconds, left", *(_cell_stop([s for s in stops if s.setting == label]) for
                                 label in labels)]]))
    for fault in faults:
        measured = [o for o in outcomes if o.fault == fault and not o.skipped]
        worst = _worst(measured)
        result.target(f"chaos: serving again after {fault} (worst setting, round)",
                      None if worst is None else 1000 * worst, f"<= {1000 * TARGET:g}", "ms")
    measured = [o for o in outcomes if not o.skipped]
    result.target("chaos: faults that left the app broken", float(sum(o.broken for o in
                                                                       measured)), "<= 0")
    result.target("chaos: processes leaked", float(sum(len(o.leaked) for o in measured)
                                                   + sum(len(s.left) for s in stops)), "<= 0")


def _worst(outcomes: list[Outcome]) -> float | None:
    """The slowest recovery (OBSERVE_MAX for none); None if nothing was measured."""
    if not outcomes:
        return None
    return max(o.recovery if o.recovery is not None else OBSERVE_MAX for o in outcomes)


def _cell_recovery(outcomes: list[Outcome]) -> str:
    measured = [o for o in outcomes if not o.skipped]
    if not measured:
        return outcomes[0].skipped if outcomes else "-"
    worst = _worst(measured)
    assert worst is not None
    if any(o.recovery is None for o in measured):
        return f"not in {OBSERVE_MAX:g} s MISS"
    return f"{1000 * worst:,.0f} {'pass' if worst <= TARGET else 'MISS'}"


def _cell_errors(outcomes: list[Outcome]) -> str:
    measured = [o for o in outcomes if not o.skipped]
    if not measured:
        return "-"
    errors: Counter[str] = Counter()
    for o in measured:
        errors.update(o.errors)
    return ", ".join(f"{code} x{n}" for code, n in sorted(errors.items())) or "none"


def _cell_health(outcomes: list[Outcome]) -> str:
    measured = [o for o in outcomes if not o.skipped]
    if not measured:
        return "-"
    broken = sum(o.broken for o in measured)
    leaked = sorted(p for o in measured for p in o.leaked)
    words = [f"BROKEN x{broken}" if broken else "ok",
             *([f"LEAKED {', '.join(map(str, leaked))}"] if leaked else []),
             f"log +{max(o.log_lines for o in measured)}"]
    return ", ".join(words)


def _cell_pool(outcomes: list[Outcome]) -> str:
    measured = [o for o in outcomes if not o.skipped]
    if not measured:
        return "-"
    if any(o.pool_back is None for o in measured):
        return "not seen"
    return f"{1000 * max(o.pool_back or 0.0 for o in measured):,.0f}"


def _cell_stop(stops: list[Stopped]) -> str:
    if not stops:
        return "-"
    codes = sorted({str(s.code) for s in stops})
    left = sorted(p for s in stops for p in s.left)
    return (f"exit {'/'.join(codes)}, {max(s.seconds for s in stops):.1f} s, "
            f"{'left ' + ', '.join(map(str, left)) if left else 'none left'}")


def _code_name(code: int) -> str:
    return "no answer" if code == NO_ANSWER else str(code)


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
