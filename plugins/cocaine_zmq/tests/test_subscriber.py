"""``zeromq-subscriber``: a PUB peer in another process; prefixes; unreachable publishers."""

from __future__ import annotations

import time


def subscriber_app(cocaine_node, make_app, recorder_code, out, **options) -> None:
    """Start an app whose `record` handler gets the subscriber's messages."""
    code = recorder_code(out) + "\ndef ping(request):\n    return b'pong'\n"
    tasks = {"record": {"type": "zeromq-subscriber", **options},
             "ping": {"type": "native-server"}}
    cocaine_node.add_app("sub", make_app(code, tasks=tasks, engine={"pool-limit": 1}))


def test_subscriber_takes_only_its_prefix(cocaine_node, make_app, tmp_path, peer, tcp, lines,
                                          recorder_code):
    """Only messages whose topic starts with `subscribe` become jobs: the first frame is the
    topic (meta), the rest the body; a one-frame message is all body."""
    endpoint, out = tcp(), tmp_path / "out.jsonl"
    subscriber_app(cocaine_node, make_app, recorder_code, out, endpoint=endpoint,
                   subscribe="news")
    messages = [["news.a", "1"], ["sport.b", "2"], ["news.multi", "x", "y"], ["newsflash"],
                ["weather", "news"], ["news.end", "end"]]
    peer("publish", bind=endpoint, probe=["news.probe", "p"], out_file=str(out),
         messages=messages, until="news.end")
    got = [(line["topic"], line["frames"]) for line in lines(out)
           if line["topic"] != "news.probe"]
    assert got == [("news.a", ["1"]), ("news.multi", ["x", "y"]), (None, ["newsflash"]),
                   ("news.end", ["end"])]
    info = cocaine_node.info("sub")["tasks"]["record"]
    assert info["endpoint"] == [endpoint] and info["subscribe"] == ["news"]


def test_unreachable_publisher_is_retried(cocaine_node, make_app, tmp_path, peer, tcp, lines,
                                          recorder_code):
    """A publisher that is not there yet does not hold up the app or the node; ZeroMQ
    connects when it appears. Several endpoints and prefixes may be given."""
    absent, later, out = tcp(), tcp(), tmp_path / "out.jsonl"
    started = time.monotonic()
    subscriber_app(cocaine_node, make_app, recorder_code, out, endpoint=[absent, later],
                   subscribe=["a", "b"])
    with cocaine_node.client() as client:
        assert client.call("sub", "ping", b"") == b"pong"
    assert time.monotonic() - started < 30
    peer("publish", bind=later, probe=["a-probe", "p"], out_file=str(out),
         messages=[["b", "1"], ["c", "2"], ["a", "end"]], until="end")
    got = [line["frames"] for line in lines(out) if line["topic"] != "a-probe"]
    assert got == [["1"], ["end"]]
