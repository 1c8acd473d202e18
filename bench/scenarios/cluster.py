"""Scenario, cluster: what one forward adds to a request, and what two nodes serve against one.

Three ``cocaine node`` processes on 127.0.0.1, each with its own port, storage and run dir:
A and B in one cluster (``--cluster bench --cluster-key K``, each ``--peer`` the other's link,
``--cluster-listen`` a port of its own), and S, a node in no cluster. The measurement starts
once A and B each see the other ``up`` with its apps ``running`` (the control method
``cluster-nodes``) and every pool holds its warm slaves.

1. **forward latency**, one 100-byte echo in flight: *local* is the app ``local`` on A
   (pool-limit 1, pool-min 1), called on A; *forwarded* is the app ``remote``, deployed only on
   B (the same engine), called on A, which has no such app and forwards every request to B
   (the one hop, answer back through A); *direct* is ``remote`` called on B, a reference:
   local-on-A against direct-to-B shows the noise between two nodes doing the same work; and
   two floors under the forward, ``remote`` called through a plain pyzmq relay (its own
   process: a ROUTER in, a DEALER out, a blocking poll loop, no asyncio, no parsing): *relayed
   to B's link* (the DEALER a Curve client under the cluster's key, as A's link is) and
   *relayed to B's endpoint* (plain, B's native endpoint). relayed-plain - direct is what an
   extra process hop costs on this machine; relayed-link - relayed-plain what CurveZMQ on the
   link adds; forwarded - relayed-link what cocaine's own forwarding on A adds. The five run
   back to back in each round, in an order rotated every round.
   Added p50 is forwarded - local, per round.
2. **two nodes against one**: the app ``io`` whose handler sleeps 10 ms (I/O wait, no CPU),
   pool-limit 4 and pool-min 4 (one node's 4 slaves serve at most ~400 a second: the pool is
   the bottleneck, not the CPU), 32 requests in flight in a closed loop. *One node* is S alone;
   *two nodes* is A with B in its cluster, the load sent to A only (A runs what its 4 slots
   take and forwards the rest to B). Both back to back each round; the ratio per round.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.loadgen import LoadResult, NativeLoad, probe
from bench.nodes import ECHO_APP, CocaineNode, cocaine_command, free_port, write_app
from bench.processes import ProcessGroup, cpu_seconds, wait_for
from bench.report import number
from bench.results import Figure, ScenarioResult, interleave, percentile
from bench.session import Bench

NAME = "cluster"
TITLE = "Cluster: the added latency of one forward; two nodes against one (10 ms handler)"
CLUSTER = "bench"
#: The I/O-bound app: 4 slaves, each job waits 10 ms.
IO_APP = """\
import time


def echo(request):
    time.sleep(0.01)
    return request.data
"""
IO_ENGINE = {"pool-limit": 4, "pool-min": 4, "queue-limit": 1000}
ECHO_ENGINE = {"pool-limit": 1, "pool-min": 1, "queue-limit": 100}
INFLIGHT = 32
LATENCY = {"local": "local on A", "forwarded": "forwarded A → B", "direct": "direct to B",
           "relayed": "plain relay → B's link", "plain": "plain relay → B's endpoint"}
ROOT = Path(__file__).resolve().parents[2]
SCALE = {"one": "one node", "two": "two nodes"}


class ClusterNode(CocaineNode):
    """``cocaine node`` with extra arguments (its cluster, key and peer)."""

    def __init__(self, group: ProcessGroup, folder: Path, extra: list[str],
                 endpoint: str | None = None) -> None:
        super().__init__(group, folder)
        self.extra = extra
        if endpoint is not None:
            self.endpoint = endpoint

    def start(self, timeout: float = 60.0) -> ClusterNode:
        """Start the node with its extra arguments; return once it answers ``list``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = self.group.start(
            [cocaine_command(), "node", "--listen", self.endpoint, "--storage",
             f"files://{self.folder / 'storage'}", "--run-dir", str(self.folder / "run"),
             "--log-level", "warning", "--log-format", "plain", *self.extra], log=self.log)

        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"cocaine node exited with {self.process.returncode}; see "
                                   f"{self.log}:\n{self.log.read_text()[-2000:]}")
            try:
                self.control("list", timeout=0.5)
                return True
            except Exception:
                return False

        wait_for(answers, timeout, f"cocaine node {self.endpoint} to answer")
        return self

    def warm(self, app: str, timeout: float = 60.0) -> None:
        """Wait until ``app`` runs with its ``pool-min`` slaves ready."""
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"cocaine node exited with {self.process.returncode}; see "
                                   f"{self.log}")
            try:
                info = self.info(app)
            except Exception:
                return False
            pool = info["pool"]
            return bool(info["state"] == "running" and pool["idle"] + pool["busy"] >= pool["min"])

        wait_for(ready, timeout, f"app {app} on {self.endpoint} to have its warm slaves")


class Relay:
    """A plain pyzmq relay to B (``relay`` below, in a process of its own)."""

    def __init__(self, group: ProcessGroup, to: str, key: str, log: Path) -> None:
        self.group = group
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.process = group.start([sys.executable, "-m", "bench.scenarios.cluster", "relay",
                                    self.endpoint, to, key], log=log, cwd=ROOT)

    def stop(self) -> None:
        """SIGTERM by PID."""
        self.group.stop(self.process)


def _two_free_ports() -> tuple[int, int]:
    ports: set[int] = set()
    while len(ports) < 2:
        ports.add(free_port())
    first, second = sorted(ports)
    return first, second


def start_nodes(bench: Bench) -> tuple[dict[str, ClusterNode], dict[str, Relay]]:
    """S (no cluster), and A and B peered in cluster ``bench``, each with its apps warm; and
    the two relays to B (their endpoints, by key: ``relayed`` to its link, ``plain`` to its
    endpoint)."""
    folder = bench.subfolder("cluster")
    key = folder / "cluster.key"
    made = subprocess.run([cocaine_command(), "cluster", "key", str(key)], capture_output=True,
                          timeout=60)
    if made.returncode != 0:
        raise RuntimeError(f"cocaine cluster key failed: {made.stderr.decode()[-500:]}")
    (a_port, a_link), (b_port, b_link) = _two_free_ports(), _two_free_ports()
    nodes: dict[str, ClusterNode] = {}
    relays: dict[str, Relay] = {}
    try:
        nodes["S"] = ClusterNode(bench.group, folder / "s", []).start()
        for name, port, link, other in (("A", a_port, a_link, b_link),
                                        ("B", b_port, b_link, a_link)):
            nodes[name] = ClusterNode(
                bench.group, folder / name.lower(),
                ["--cluster", CLUSTER, "--cluster-key", str(key), "--cluster-listen",
                 f"tcp://127.0.0.1:{link}", "--peer", f"tcp://127.0.0.1:{other}"],
                endpoint=f"tcp://127.0.0.1:{port}").start()
        echo = write_app(folder / "app-echo", ECHO_APP, {"echo": {"type": "native-server"}},
                         ECHO_ENGINE)
        io = write_app(folder / "app-io", IO_APP, {"echo": {"type": "native-server"}},
                       IO_ENGINE)
        placed = (("A", echo, "local"), ("B", echo, "remote"), ("S", io, "io"),
                  ("A", io, "io"), ("B", io, "io"))
        for where, manifest, app in placed:
            nodes[where].deploy(manifest, app)
        for where, _, app in placed:
            nodes[where].warm(app)
        wait_peered(nodes["A"], nodes["B"])
        for kind, to, secret in (("relayed", f"tcp://127.0.0.1:{b_link}", str(key)),
                                 ("plain", nodes["B"].endpoint, "-")):
            relays[kind] = Relay(bench.group, to, secret, folder / f"relay-{kind}.log")
    except BaseException:
        stop(nodes, relays)
        raise
    return nodes, relays


def stop(nodes: dict[str, ClusterNode], relays: dict[str, Relay]) -> None:
    """Stop the relays, then the nodes (B, A, S), each by its PID."""
    for part in [*relays.values(), *reversed(list(nodes.values()))]:
        part.stop()


def wait_peered(a: ClusterNode, b: ClusterNode, timeout: float = 60.0) -> None:
    """Wait until A sees B up with ``remote`` and ``io`` running, and B sees A up with
    ``local`` and ``io`` running."""
    wanted = {a.endpoint: (b.endpoint, ("remote", "io")), b.endpoint: (a.endpoint,
                                                                       ("local", "io"))}

    def peered() -> bool:
        for node in (a, b):
            other, apps = wanted[node.endpoint]
            try:
                view = node.control("cluster-nodes", timeout=2.0)
            except Exception:
                return False
            seen = [n for n in view["nodes"] if n["endpoint"] == other and n["state"] == "up"
                    and all(n["apps"].get(app, {}).get("state") == "running" for app in apps)]
            if not seen:
                return False
        return True

    wait_for(peered, timeout, "nodes A and B to see each other up with their apps running",
             interval=0.1)


def _forwarded(node: ClusterNode) -> int:
    return int(node.control("info")["cluster"]["forwarded"])


def _checked(label: str, measured: LoadResult) -> list[float]:
    values = list(measured.latencies)
    if measured.errors or measured.wrong or not values:
        raise RuntimeError(f"{label}: {measured.done} answers, errors {dict(measured.errors)},"
                           f" wrong echoes {measured.wrong}")
    return values


def run(bench: Bench) -> ScenarioResult:
    """Measure the forward's latency and the two-node throughput, round by round."""
    result = ScenarioResult(NAME, TITLE)
    bench.say("  starting nodes S, A and B (A and B in one cluster)")
    nodes, relays = start_nodes(bench)
    a, b, s = nodes["A"], nodes["B"], nodes["S"]
    loads = {"local": NativeLoad(a.endpoint, app="local"),
             "forwarded": NativeLoad(a.endpoint, app="remote"),
             "direct": NativeLoad(b.endpoint, app="remote"),
             "relayed": NativeLoad(relays["relayed"].endpoint, app="remote"),
             "plain": NativeLoad(relays["plain"].endpoint, app="remote"),
             "one": NativeLoad(s.endpoint, app="io"),
             "two": NativeLoad(a.endpoint, app="io")}
    try:
        for endpoint, app in ((a.endpoint, "local"), (a.endpoint, "remote"),
                              (b.endpoint, "remote"), (relays["relayed"].endpoint, "remote"),
                              (relays["plain"].endpoint, "remote"), (s.endpoint, "io"),
                              (a.endpoint, "io")):
            probe(endpoint, app, "echo", timeout=60)
        _measure(bench, result, nodes, loads)
    finally:
        for load in loads.values():
            load.close()
        stop(nodes, relays)
    return result


def _measure(bench: Bench, result: ScenarioResult, nodes: dict[str, ClusterNode],
             loads: dict[str, NativeLoad]) -> None:
    settings = bench.settings
    a, b = nodes["A"], nodes["B"]
    p50 = {k: result.figure(f"{label}, p50", "us") for k, label in LATENCY.items()}
    p99 = {k: result.figure(f"{label}, p99", "us") for k, label in LATENCY.items()}
    added = result.figure("added by one forward, p50 (forwarded - local)", "us")
    noise = result.figure("direct to B - local on A, p50 (noise between nodes)", "us")
    floor = result.figure("a process hop: relay → B's endpoint - direct, p50", "us")
    curve = result.figure("CurveZMQ on the link: relay → B's link - relay → B's endpoint, p50",
                          "us")
    own = result.figure("cocaine's forwarding on A: forwarded - relay → B's link, p50", "us")
    rates = {k: result.figure(f"{label}, 10 ms handler, {INFLIGHT} in flight", "req/s")
             for k, label in SCALE.items()}
    share = result.figure("two nodes: share forwarded to B", "%")
    cpu = {(k, who): Figure(f"{LATENCY[k]}: {who}", "us") for k in LATENCY
           for who in ("A", "B")}
    samples: dict[str, list[float]] = {k: [] for k in LATENCY}
    payload = b"x" * 100
    for round_index in range(settings.rounds):
        bench.say(f"  round {round_index + 1}/{settings.rounds}")
        for key in interleave(LATENCY, round_index):
            before = {"A": cpu_seconds([a.pid]), "B": cpu_seconds([b.pid])}
            measured = loads[key].run(payload, 1, settings.latency_seconds,
                                      min(0.2, settings.warmup_seconds))
            for who, node in (("A", a), ("B", b)):
                cpu[key, who].add((cpu_seconds([node.pid]) - before[who])
                                  / max(1, measured.answered) * 1e6)
            values = _checked(LATENCY[key], measured)
            p50[key].add(_us(percentile(values, 50)))
            p99[key].add(_us(percentile(values, 99)))
            samples[key].extend(values)
        added.add(p50["forwarded"].rounds[-1] - p50["local"].rounds[-1])
        noise.add(p50["direct"].rounds[-1] - p50["local"].rounds[-1])
        floor.add(p50["plain"].rounds[-1] - p50["direct"].rounds[-1])
        curve.add(p50["relayed"].rounds[-1] - p50["plain"].rounds[-1])
        own.add(p50["forwarded"].rounds[-1] - p50["relayed"].rounds[-1])
        for key in interleave(SCALE, round_index):
            sent = _forwarded(a) if key == "two" else 0
            measured = loads[key].run(payload, INFLIGHT, settings.throughput_seconds,
                                      settings.warmup_seconds)
            _checked(SCALE[key], measured)
            rates[key].add(measured.rate)
            if key == "two":
                share.add(100.0 * (_forwarded(a) - sent) / max(1, measured.answered))
        time.sleep(0.1)  # the last answers drained, the announces settled
    ratio = result.add_ratio("two nodes / one node", rates["two"], rates["one"])
    for key, label in LATENCY.items():
        result.samples[label] = samples[key]
        result.details[f"{key}_requests"] = len(samples[key])
    result.tables.append((
        "Node CPU time per request, us (median of rounds): where a forward's work lands",
        ["path", "node A", "node B"],
        [[LATENCY[k], number(cpu[k, "A"].median), number(cpu[k, "B"].median)]
         for k in LATENCY]))
    result.details["cpu_us_per_request"] = {f.name: f.as_dict() for f in cpu.values()}
    result.details["engines"] = {"echo": ECHO_ENGINE, "io": IO_ENGINE, "inflight": INFLIGHT}
    result.details["cluster_nodes_A"] = json.loads(json.dumps(a.control("cluster-nodes")))
    result.target("added p50 of one forward", added.median, "<= 150", "us")
    result.target("two nodes / one node, 10 ms handler", ratio.median, ">= 1.8", "x")


def _us(value: float | None) -> float | None:
    return None if value is None else value * 1e6


def relay(front: str, link: str, key_file: str) -> None:
    """A plain pyzmq relay: requests from ``front`` (a ROUTER) to ``link`` (a DEALER; a Curve
    client under the cluster's key in ``key_file``, or plain if it is ``-``), answers back to
    the client that sent the last request.
    One client, one request in flight: the floor under a forward, with none of cocaine's
    work. Runs until killed."""
    import zmq

    from cocaine_core.cluster.key import link_keypair, read_key_file

    context = zmq.Context.instance()
    inbound, outbound = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    if key_file != "-":
        public, secret = link_keypair(read_key_file(Path(key_file)), CLUSTER)
        outbound.curve_serverkey, outbound.curve_publickey, outbound.curve_secretkey = (
            public, public, secret)
    inbound.bind(front)
    outbound.connect(link)
    poller = zmq.Poller()
    poller.register(inbound, zmq.POLLIN)
    poller.register(outbound, zmq.POLLIN)
    client = b""
    while True:
        for sock, _ in poller.poll():
            if sock is inbound:
                client, *frames = inbound.recv_multipart()
                outbound.send_multipart(frames)
            else:
                inbound.send_multipart([client, *outbound.recv_multipart()])


if __name__ == "__main__" and sys.argv[1:2] == ["relay"] and len(sys.argv) == 5:
    relay(*sys.argv[2:5])
