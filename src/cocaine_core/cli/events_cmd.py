"""``cocaine events``: tail a node's lifecycle events (``event_stream.py``) as they happen."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from cocaine_core.cli.options import KeyOption, NodeOption, ServerKeyOption, WaitOption, client
from cocaine_core.errors import NodeError
from cocaine_core.protocol import DEFAULT_ENDPOINT

#: Longest field value shown in a line of text (a long reason is cut).
FIELD_LIMIT = 200
#: Least and greatest ``--count``.
COUNT_RANGE = (1, 1_000_000)


def events(
    apps: Annotated[list[str] | None, typer.Argument(
        help="Only these apps' events (@node: the node's own).")] = None,
    topic: Annotated[list[str] | None, typer.Option(
        "--topic", help="Only events of this topic (slave-ended, broken...); repeat for "
                        "more.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    count: Annotated[int | None, typer.Option(
        help="Stop after this many events [never; 1 to 1000000].")] = None,
    endpoint: Annotated[str | None, typer.Option(
        "--events", help="The event stream's endpoint [asked of the node].")] = None,
    node: NodeOption = DEFAULT_ENDPOINT,
    wait: WaitOption = 10.0,
    key: KeyOption = None,
    server_key: ServerKeyOption = None,
) -> None:
    """Tail the node's events: apps deployed, started, broken, stopped; slaves spawned and
    ended, and why. Ctrl-C stops."""
    import zmq

    from cocaine_core.cli.options import read_server_key
    from cocaine_core.event_stream import check_events_endpoint
    from cocaine_core.events import TOPICS
    from cocaine_core.trust.client_keys import ClientKeys

    if count is not None and not COUNT_RANGE[0] <= count <= COUNT_RANGE[1]:
        raise NodeError(f"--count must be from {COUNT_RANGE[0]} to {COUNT_RANGE[1]}, "
                        f"got {count}")
    unknown = sorted(set(topic or []) - set(TOPICS))
    if unknown:
        raise NodeError(f"no event has the topic {', '.join(unknown)}; the topics: "
                        f"{', '.join(TOPICS)}")
    if endpoint is not None:
        try:
            endpoint = check_events_endpoint(endpoint)
        except ValueError as exc:
            raise NodeError(str(exc)) from None
    if endpoint is None:
        with client(node, wait, key, server_key) as node_client:
            endpoint = stream_endpoint(node_client.control("info"), node)
    sub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        ClientKeys(key, read_server_key(server_key)).secure(sub)
        for prefix in subscriptions(apps or [], topic or []):
            sub.setsockopt(zmq.SUBSCRIBE, prefix)
        sub.connect(endpoint)
        typer.echo(f"events of {endpoint}; Ctrl-C stops", err=True)
        seen = 0
        while count is None or seen < count:
            if not sub.poll(1000):
                continue
            event = _decoded(sub.recv_multipart()[-1])
            if event is None or not wanted(event, apps or [], topic or []):
                continue
            typer.echo(json.dumps(event) if as_json else line(event))
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        sub.close(linger=0)


def stream_endpoint(info: dict[str, Any], node: str) -> str:
    """Where the node at ``node`` publishes its events, from its ``info``; NodeError if it
    cannot be reached from here (an ``ipc://`` socket of another machine)."""
    stream = info.get("events")
    if not isinstance(stream, dict) or not isinstance(stream.get("endpoint"), str):
        raise NodeError("this node publishes no event stream (it predates cocaine events)")
    endpoint: str = stream["endpoint"]
    if endpoint.startswith("ipc://"):
        if not Path(endpoint[len("ipc://"):]).exists():
            raise NodeError(f"the node publishes its events on {endpoint}, which is not on "
                            f"this machine (or not yours to read); run cocaine events there, "
                            f"or start the node with --events tcp://HOST:PORT")
        return endpoint
    bound = urlsplit(endpoint)
    if bound.hostname in ("0.0.0.0", "::", "*"):  # bound everywhere: reach it where the node is
        host = urlsplit(node.split(",")[0]).hostname or "127.0.0.1"
        endpoint = f"tcp://{host}:{bound.port}"
    return endpoint


def subscriptions(apps: list[str], topics: list[str]) -> list[bytes]:
    """The ZeroMQ prefixes to subscribe to: ``<app>.`` per app (or ``<app>.<topic>``), or all."""
    if not apps:
        return [b""]
    if not topics:
        return [f"{app}.".encode() for app in apps]
    return [f"{app}.{topic}".encode() for app in apps for topic in topics]


def wanted(event: dict[str, Any], apps: list[str], topics: list[str]) -> bool:
    """Whether ``event`` is one asked for (a prefix match lets ``a.b`` through for ``a``)."""
    return (not apps or event.get("app") in apps) and (not topics or event.get("topic")
                                                       in topics)


def line(event: dict[str, Any]) -> str:
    """One event as a line of text: time, app, topic, then its details."""
    stamp = time.strftime("%H:%M:%S", time.localtime(float(event.get("time", 0))))
    details = " ".join(f"{name}={_short(value)}" for name, value in event.items()
                       if name not in ("app", "topic", "time", "node") and value is not None)
    return f"{stamp} {event.get('app')} {event.get('topic')} {details}".rstrip()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("\n", " ")
    if len(text) > FIELD_LIMIT:
        text = text[:FIELD_LIMIT - 1] + "…"
    return json.dumps(text) if " " in text else text


def _decoded(body: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(body)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
