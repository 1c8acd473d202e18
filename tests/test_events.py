"""Lifecycle events and what plugins see of a node: the ``cocaine_event``,
``cocaine_node_started`` and ``cocaine_node_stopping`` hooks, the event stream and
``cocaine events``, jobs counted by event and code, restarts counted by reason, and plugin
options on ``cocaine node`` and ``cocaine run``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from cocaine_core import hookimpl
from cocaine_core.cli import plugin_flags
from cocaine_core.engine.event_stats import BUCKETS, MAX_EVENTS, OTHER, EventStats
from cocaine_core.errors import NodeError, ServiceError
from cocaine_core.events import Event
from cocaine_core.node_view import NodeView
from cocaine_core.testing import RunningNode, free_port, wait_until

APP = """
import os
import time


def echo(request):
    return request.data


def fail(request):
    raise ValueError("no")


def pid(request):
    return str(os.getpid())
"""

TASKS = {name: {"type": "native-server"} for name in ("echo", "fail", "pid")}
COCAINE = str(Path(sys.executable).with_name("cocaine"))


# -- counting by event --------------------------------------------------------------------------


def test_the_histogram_is_cumulative_and_counts_every_job() -> None:
    stats = EventStats()
    for seconds in (0.0005, 0.003, 0.003, 0.2, 100.0):
        stats.of("echo").observe(seconds)
    stats.of("echo").count(200)
    data = stats.as_dict()["echo"]
    counts = data["seconds"]["counts"]
    assert data["seconds"]["buckets"] == list(BUCKETS)
    assert counts == sorted(counts), "cumulative counts never fall"
    assert counts[BUCKETS.index(0.001)] == 1 and counts[BUCKETS.index(0.005)] == 3
    assert counts[-1] == 4 and data["seconds"]["count"] == 5, "100 s is only in the total"
    assert data["seconds"]["sum"] == pytest.approx(100.2065)
    assert data["codes"] == {"200": 1}


def test_events_past_the_bound_are_counted_together() -> None:
    stats = EventStats()
    for n in range(MAX_EVENTS + 50):
        stats.of(f"event-{n}").count(200)
    data = stats.as_dict()
    assert len(data) == MAX_EVENTS + 1
    assert data[OTHER]["codes"] == {"200": 50}


# -- in a node ----------------------------------------------------------------------------------


class Watching:
    """Notes every event and the node-level hook calls."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.calls: list[tuple[str, NodeView, dict[str, Any]]] = []
        self.lock = threading.Lock()

    @hookimpl
    def cocaine_event(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    @hookimpl
    def cocaine_node_started(self, node: NodeView) -> Any:
        self.calls.append(("started", node, node.info()))

        async def later() -> None:
            self.calls.append(("awaited", node, {}))

        return later()

    @hookimpl
    def cocaine_node_stopping(self, node: NodeView) -> None:
        self.calls.append(("stopping", node, {}))

    def of(self, app: str, topic: str) -> list[Event]:
        with self.lock:
            return [e for e in self.events if e.app == app and e.topic == topic]


@pytest.fixture
def watched_node(inline_plugin: Callable[..., Any]) -> Any:
    plugin = Watching()
    inline_plugin(plugin, name="watching")
    run_dir = Path("/tmp") / f"cocaine-test-{free_port()}"
    node = RunningNode(run_dir=run_dir).start()
    try:
        yield node, plugin
    finally:
        node.stop()
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)


def test_the_node_hooks_see_the_node_and_are_awaited(watched_node: Any) -> None:
    node, plugin = watched_node
    started, view, info = plugin.calls[0]
    assert started == "started" and [c[0] for c in plugin.calls[:2]] == ["started", "awaited"]
    assert view.name == node.node.name and view.endpoint == node.node.listen
    assert view.options == {} and view.run_dir == node.node.run_dir and view.curve is False
    assert info["node"] == node.node.name and info["events"]["endpoint"].startswith("ipc://")
    node.stop()
    assert plugin.calls[-1][0] == "stopping"
    assert [e.topic for e in plugin.events if e.app == "@node"] == ["node-started",
                                                                    "node-stopping"]


def test_jobs_are_counted_by_event_and_code(watched_node: Any, make_app: Callable[..., Path]
                                           ) -> None:
    node, _plugin = watched_node
    node.add_app("counted", make_app(APP, tasks=TASKS))
    with node.client() as client:
        for _ in range(3):
            assert client.call("counted", "echo", b"x") == b"x"
        with pytest.raises(ServiceError) as failed:
            client.call("counted", "fail")
    jobs = node.info("counted")["jobs"]["events"]
    assert jobs["echo"]["codes"] == {"200": 3}
    assert jobs["echo"]["seconds"]["count"] == 3
    assert jobs["fail"]["codes"] == {str(failed.value.code): 1}
    assert failed.value.code == 502


def test_a_killed_slave_is_an_event_and_a_restart(watched_node: Any,
                                                 make_app: Callable[..., Path]) -> None:
    node, plugin = watched_node
    node.add_app("killed", make_app(APP, tasks=TASKS, engine={"pool-min": 1}))
    assert plugin.of("killed", "started"), "the app said it serves"
    with node.client() as client:
        pid = int(client.call("killed", "pid"))
    spawned = [e for e in plugin.of("killed", "slave-spawned") if e.data["pid"] == pid]
    assert spawned and spawned[0].data["slave"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: [e for e in plugin.of("killed", "slave-ended") if e.data["pid"] == pid],
               timeout=30, message="slave-ended for the killed slave")
    [ended] = [e for e in plugin.of("killed", "slave-ended") if e.data["pid"] == pid]
    assert ended.data["reason"] == "crashed" and ended.data["status"] == -signal.SIGKILL
    assert str(pid) in ended.data["why"] and ended.node == node.node.name
    assert node.info("killed")["restarts"] == {"crashed": 1}
    node.remove_app("killed")
    assert plugin.of("killed", "removed") and plugin.of("killed", "stopped")
    shrunk = [e.data["reason"] for e in plugin.of("killed", "slave-ended")
              if e.data["pid"] != pid]
    assert set(shrunk) <= {"stopping", "spare"}, "stopping is not a restart"
    assert node.info()["apps"] == {}


def test_a_broken_app_is_an_event(watched_node: Any, make_app: Callable[..., Path]) -> None:
    node, plugin = watched_node
    node.add_app("broken", make_app("raise ImportError('a missing module')\n", tasks=TASKS))
    [broken] = plugin.of("broken", "broken")
    assert "a missing module" in broken.data["reason"]


# -- the stream and cocaine events --------------------------------------------------------------


def tail_one(node: Any, args: list[str], trigger: Callable[[], None],
             tries: int = 20) -> tuple[dict[str, Any], int]:
    """Run ``cocaine events ARGS --json --count 1`` against ``node`` and call ``trigger``
    until it has heard its one event (a subscription takes a moment to reach the node);
    the event and the command's exit code."""
    tail = subprocess.Popen([COCAINE, "events", *args, "--json", "--count", "1", "--node",
                             node.endpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: tail.poll() is not None or _said(tail), timeout=30,
                   message="cocaine events to subscribe")
        for _ in range(tries):
            trigger()
            try:
                out, _err = tail.communicate(timeout=3)
                return json.loads(out), tail.returncode
            except subprocess.TimeoutExpired:
                continue
        raise AssertionError(f"cocaine events {' '.join(args)} heard nothing")
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()


def test_cocaine_events_tails_the_stream_of_a_node(node_process: Any, tmp_path: Path,
                                                   make_app: Callable[..., Path]) -> None:
    node = node_process()
    node.cli("app", "deploy", str(make_app(APP, tasks=TASKS, engine={"pool-min": 1})),
             "--name", "tailed")

    def kill_a_slave() -> None:
        with node.client() as client:
            os.kill(int(client.call("tailed", "pid")), signal.SIGKILL)

    event, code = tail_one(node, ["tailed", "--topic", "slave-ended"], kill_a_slave)
    assert (event["app"], event["topic"], event["reason"]) == ("tailed", "slave-ended",
                                                               "crashed")
    assert code == 0


def _said(process: subprocess.Popen[bytes]) -> bool:
    """Whether ``process`` wrote its first line to stderr (it does once it subscribed)."""
    assert process.stderr is not None
    return bool(process.stderr.readline())


def test_the_stream_is_a_pub_socket_with_app_topics(watched_node: Any,
                                                   make_app: Callable[..., Path]) -> None:
    node, _plugin = watched_node
    endpoint = node.info()["events"]["endpoint"]
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"streamed.")
    sub.connect(endpoint)
    try:
        for n in range(20):  # until the subscription has reached the node
            node.add_app("streamed", make_app(APP, tasks=TASKS, name=f"v{n}"))
            if sub.poll(2000):
                break
            node.remove_app("streamed")
        topic, body = sub.recv_multipart()
        event = json.loads(body)
        assert topic == f"streamed.{event['topic']}".encode()
        assert event["app"] == "streamed" and event["node"] == node.node.name
    finally:
        sub.close(linger=0)


@pytest.mark.parametrize(("args", "said"), [
    (["--count", "0"], "--count must be from 1"),
    (["--topic", "nosuch"], "no event has the topic nosuch; the topics: deployed"),
    (["--events", "garbage"], "--events must be tcp://HOST:PORT or ipc://PATH"),
])
def test_cocaine_events_refuses_bad_arguments_saying_why(args: list[str], said: str) -> None:
    result = subprocess.run([COCAINE, "events", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and said in result.stderr, result.stderr


def test_every_deploy_is_an_event(node_process: Any, make_app: Callable[..., Path]) -> None:
    node = node_process()
    manifest = make_app(APP, tasks=TASKS)
    event, _code = tail_one(node, ["fresh", "--topic", "deployed"], lambda: node.cli(
        "app", "deploy", str(manifest), "--name", "fresh"), tries=10)
    assert (event["app"], event["topic"]) == ("fresh", "deployed")
    assert event["version"] >= 1 and len(event["sha256"]) == 64


def test_a_bad_events_endpoint_is_refused_before_the_node_starts(tmp_path: Path) -> None:
    result = subprocess.run([COCAINE, "node", "--events", "http://x", "--storage",
                             f"files://{tmp_path / 's'}", "--run-dir", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "--events must be tcp://HOST:PORT or ipc://PATH" in result.stderr


# -- plugin options -----------------------------------------------------------------------------


def test_plugin_options_are_taken_out_of_the_command_line() -> None:
    names = ["metrics", "example-greeting"]
    assert plugin_flags.take(["node", "--metrics", "h:1", "--listen", "x"], names) == [
        "node", "--listen", "x"]
    assert plugin_flags.GIVEN == {"metrics": "h:1"}
    assert plugin_flags.take(["--debug", "run", "m.json", "--metrics=h:2"], names) == [
        "--debug", "run", "m.json"]
    assert plugin_flags.GIVEN == {"metrics": "h:2"}
    assert plugin_flags.take(["call", "app", "ev", "--metrics", "1"], names) == [
        "call", "app", "ev", "--metrics", "1"], "only node and run take them"
    assert plugin_flags.take(["node", "--", "--metrics", "1"], names) == [
        "node", "--", "--metrics", "1"]
    with pytest.raises(NodeError, match="--metrics needs a value"):
        plugin_flags.take(["node", "--metrics"], names)
    with pytest.raises(NodeError, match="--metrics needs a value"):
        plugin_flags.take(["node", "--metrics", "--listen", "x"], names)
    with pytest.raises(NodeError, match="--metrics is given twice"):
        plugin_flags.take(["node", "--metrics", "a:1", "--metrics=b:2"], names)


def test_a_plugin_adds_an_option_to_cocaine_node(node_process: Any) -> None:
    listed = subprocess.run([COCAINE, "node", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert "--example-greeting WORD" in listed.stdout
    node = node_process("--example-greeting", "bonjour")
    wait_until(lambda: "example plugin: bonjour from node" in node.log.read_text(),
               timeout=30, message="the plugin's greeting in the log")


def test_a_bad_plugin_option_value_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([COCAINE, "node", "--example-greeting", "two words", "--storage",
                             f"files://{tmp_path / 's'}", "--run-dir", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "--example-greeting two words: a greeting is one word" in result.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists(), \
        "refused before any folder is made"


def test_an_option_of_a_plugin_not_installed_says_what_to_install() -> None:
    shipped = {"metrics": "cocaine-prometheus"}
    with pytest.raises(NodeError, match=r"--metrics is an option of cocaine-prometheus, "
                                        r"which is not installed .*pip install "
                                        r"cocaine-prometheus"):
        plugin_flags.take(["node", "--metrics", "127.0.0.1:9101"], [], shipped)
    assert plugin_flags.take(["node", "--metrics", "h:1"], ["metrics"], shipped) == ["node"]
    assert plugin_flags.take(["call", "a", "e", "--metrics"], [], shipped) == [
        "call", "a", "e", "--metrics"], "only node and run take them"


def test_cocaine_node_without_the_plugin_names_it(tmp_path: Path) -> None:
    result = subprocess.run([COCAINE, "node", "--metrics", "127.0.0.1:9101", "--storage",
                             f"files://{tmp_path / 's'}", "--run-dir", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COCAINE_DISABLE_PLUGINS": "prometheus"})
    assert result.returncode == 1
    assert "pip install cocaine-prometheus" in result.stderr, result.stderr
