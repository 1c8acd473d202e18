"""``zeromq-sink``: PUSH peers in another process feed a PULL socket; results are published."""

from __future__ import annotations

import logging

import pytest

from cocaine_core.errors import NodeError
from cocaine_core.testing import wait_until

SHOUT = '''
import time

def shout(request):
    text = request.data.decode()
    if text.startswith("skip"):
        return
    if text.startswith("many"):
        for i in range(3):
            yield f"{text.upper()} #{i}"
        return
    if text.startswith("fail"):
        raise ValueError("cannot shout " + text)
    if text.startswith("slow"):
        time.sleep(0.02)
    yield text.upper()
'''


def test_sink_runs_every_message(cocaine_node, make_app, tmp_path, peer, tcp, lines,
                                 recorder_code):
    """Each pushed message is one job (multi-frame ones as frames); results are dropped."""
    endpoint, out = tcp(), tmp_path / "out.jsonl"
    manifest = make_app(recorder_code(out), tasks={"record": {"type": "zeromq-sink",
                                                              "endpoint": endpoint}},
                        engine={"pool-limit": 1})
    cocaine_node.add_app("sink", manifest)
    messages = [[f"job {i}"] for i in range(20)] + [["a", "b", "c"], [""]]
    assert peer("push", endpoint=endpoint, messages=messages) == {"sent": 22}
    wait_until(lambda: len(lines(out)) == 22, message="22 jobs")
    assert [line["frames"] for line in lines(out)] == messages
    info = cocaine_node.info("sink")["tasks"]["record"]
    assert info["endpoint"] == endpoint and "publish" not in info
    assert (info["received"], info["done"], info["failed"], info["refused"]) == (22, 22, 0, 0)


def test_sink_publishes_results(cocaine_node, make_app, peer, tcp):
    """With `publish`, every result chunk goes out as [event name][chunk], in order; a job
    that yields nothing publishes nothing, and a failed one is counted and logged."""
    work, results = tcp(), tcp()
    manifest = make_app(SHOUT, tasks={"shout": {"type": "zeromq-sink", "endpoint": work,
                                                "publish": results}},
                        engine={"pool-limit": 1})
    cocaine_node.add_app("shouter", manifest)
    messages = [["one"], ["skip this"], ["fail this"], ["many"], ["two"]]
    result = peer("push_and_sub", push=work, sub=results, probe=["probe"],
                  probe_result="PROBE", messages=messages, expect=5)
    assert result["received"] == [["shout", "ONE"], ["shout", "MANY #0"], ["shout", "MANY #1"],
                                  ["shout", "MANY #2"], ["shout", "TWO"]]
    info = cocaine_node.info("shouter")["tasks"]["shout"]
    assert info["publish"] == results and info["failed"] == 1
    assert info["published"] == 5 + result["probes"]  # each probe was published too


def test_sink_logs_oversized_messages(cocaine_node, make_app, tmp_path, peer, tcp, lines,
                                      recorder_code, caplog):
    """A message over max-message-size is dropped with a log line; the next one runs."""
    caplog.set_level(logging.INFO, logger="cocaine.zmq")
    endpoint, out = tcp(), tmp_path / "out.jsonl"
    manifest = make_app(recorder_code(out), tasks={"record": {
        "type": "zeromq-sink", "endpoint": endpoint, "max-message-size": 1000}})
    cocaine_node.add_app("sink", manifest)
    peer("push", endpoint=endpoint, messages=[["x" * 1500], ["y" * 600, "z" * 600], ["fine"]])
    wait_until(lambda: lines(out), message="the small message to run")
    assert [line["frames"] for line in lines(out)] == [["fine"]]
    assert cocaine_node.info("sink")["tasks"]["record"]["too-large"] == 2
    logged = [r.getMessage() for r in caplog.records if "max-message-size" in r.getMessage()]
    assert logged and "task 'record' (zeromq-sink): dropped a message: the message is 1500 " \
                      "bytes, over this task's max-message-size of 1000 bytes" in logged[0]


def test_sink_waits_while_the_queue_is_full(cocaine_node, make_app, tmp_path, peer, tcp,
                                            lines):
    """At the app's queue-limit the sink stops reading instead of refusing: messages wait in
    ZeroMQ, and every one is run."""
    endpoint, out = tcp(), tmp_path / "out.jsonl"
    code = f'''
import json, time
def work(request):
    time.sleep(0.01)
    with open({str(out)!r}, "a") as f:
        f.write(json.dumps({{"n": request.data.decode()}}) + "\\n")
'''
    manifest = make_app(code, tasks={"work": {"type": "zeromq-sink", "endpoint": endpoint}},
                        engine={"pool-limit": 1, "queue-limit": 2})
    cocaine_node.add_app("sink", manifest)
    peer("push", endpoint=endpoint, messages=[[str(i)] for i in range(60)])
    wait_until(lambda: len(lines(out)) == 60, timeout=60, message="60 jobs")
    assert [line["n"] for line in lines(out)] == [str(i) for i in range(60)]
    info = cocaine_node.info("sink")["tasks"]["work"]
    assert info["refused"] == 0 and info["done"] == 60 and info["pauses"] >= 1
    assert not info["paused"]


def test_sink_endpoint_in_use(cocaine_node, make_app, tcp, occupy, is_free):
    """A sink whose PULL endpoint is taken fails the start naming the task and endpoint, and
    closes the PUB socket it had already bound."""
    work, results = tcp(), tcp()
    occupy(work)
    manifest = make_app(SHOUT, tasks={"shout": {"type": "zeromq-sink", "endpoint": work,
                                                "publish": results}})
    with pytest.raises(NodeError, match=rf"task 'shout' \(zeromq-sink\): cannot bind {work}"):
        cocaine_node.add_app("shouter", manifest)
    wait_until(lambda: is_free(results), message="the publish endpoint to be free")
