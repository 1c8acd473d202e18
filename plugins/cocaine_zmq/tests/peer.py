"""A ZeroMQ peer for the tests, run as its own process: ``python peer.py '<json spec>'``.

It has its own ZeroMQ context, so the drivers are driven by real sockets from outside the
node's process. The spec's ``op`` picks what it does; it prints one JSON object. Frames travel
through JSON as latin-1 strings (every byte maps to one character and back).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from typing import Any

import zmq


def enc(frames: list[bytes]) -> list[str]:
    """Frames to JSON-able strings."""
    return [frame.decode("latin-1") for frame in frames]


def dec(frames: list[str]) -> list[bytes]:
    """JSON strings back to frames."""
    return [frame.encode("latin-1") for frame in frames]


def socket(ctx: zmq.Context, kind: int, spec: dict[str, Any]) -> zmq.Socket:
    """A socket with a receive timeout and bounded linger."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.setsockopt(zmq.RCVTIMEO, int(spec.get("recv_timeout", 30) * 1000))
    return sock


def wait_for_file(path: str, text: str = "", timeout: float = 60) -> str:
    """Poll until the file exists (and holds ``text``); return its content."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                content = f.read()
            if text in content:
                return content
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {path} to hold {text!r}")


def op_req(ctx: zmq.Context, spec: dict[str, Any]) -> dict[str, Any]:
    """Send each request on one REQ socket (a new one after a timeout); collect replies."""
    replies: list[list[str] | None] = []
    sock = socket(ctx, zmq.REQ, spec)
    sock.connect(spec["endpoint"])
    for request in spec["requests"]:
        sock.send_multipart(dec(request))
        try:
            replies.append(enc(sock.recv_multipart()))
        except zmq.Again:
            replies.append(None)
            sock.close(linger=0)
            sock = socket(ctx, zmq.REQ, spec)
            sock.connect(spec["endpoint"])
    return {"replies": replies}


def op_dealer(ctx: zmq.Context, spec: dict[str, Any]) -> dict[str, Any]:
    """Pipeline ``count`` requests on one DEALER, then read every reply and check them."""
    sock = socket(ctx, zmq.DEALER, spec)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(spec["endpoint"])
    count, delimiter = spec["count"], spec.get("delimiter", True)
    for i in range(count):
        body = f"request {i}".encode()
        sock.send_multipart([str(i).encode(), b"", body] if delimiter else [body])
    ok, errors, bad, messages, seen = 0, Counter(), 0, [], set()
    for _ in range(count):
        try:
            frames = sock.recv_multipart()
        except zmq.Again:
            break
        if delimiter:
            tag, _empty, status, *rest = frames
            seen.add(tag)
            good_echo = rest == [b"request " + tag]
        else:
            status, *rest = frames
            good_echo = len(rest) == 1 and rest[0].startswith(b"request ")
        if status == b"ok":
            ok += 1
            bad += not good_echo
        else:
            errors[rest[0].decode()] += 1
            messages.append(rest[1].decode())
    return {"ok": ok, "errors": dict(errors), "bad": bad, "messages": messages[:3],
            "distinct": len(seen)}


def op_vanish(ctx: zmq.Context, spec: dict[str, Any]) -> dict[str, Any]:
    """Send one request from each of ``count`` REQ sockets and exit without reading."""
    sockets = []
    for _ in range(spec["count"]):
        sock = socket(ctx, zmq.REQ, spec)
        sock.connect(spec["endpoint"])
        sock.send(b"hello")
        sockets.append(sock)
    for sock in sockets:
        sock.close()  # linger: the requests go out before the process ends
    return {"sent": len(sockets)}


def op_slow_reader(ctx: zmq.Context, spec: dict[str, Any]) -> dict[str, Any]:
    """Pipeline ``count`` requests, read nothing until ``go_file`` appears, then read exactly
    the number of replies it names, and check nothing more comes."""
    sock = socket(ctx, zmq.DEALER, spec)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.connect(spec["endpoint"])
    for i in range(spec["count"]):
        sock.send_multipart([str(i).encode(), b"", b"262144"])
    expected = int(wait_for_file(spec["go_file"], "\n").strip())
    received = 0
    for _ in range(expected):
        try:
            sock.recv_multipart()
        except zmq.Again:
            break
        received += 1
    extra = 0
    if sock.poll(300):
        extra = 1
    return {"received": received, "extra": extra}


def op_push(ctx: zmq.Context, spec: dict[str, Any]) -> dict[str, Any]:
    """Push every message to ``endpoint`` (PUSH queues them until it is connected)."""
    sock = socket(ctx, zmq.PUSH, spec)
    sock.connect(spec["endpoint"])
    for message in spec["messages"]:
        sock.send_multipart(dec(message))
    sock.close()
    return {"sent": len(spec["messages"])}


def op_push_and_sub(ctx: zmq.Context, spec: dict[str, Any]) -> dict[str, Any]:
    """Subscribe to ``sub``; push ``probe`` to ``push`` until a published message arrives
    (PUB/SUB's slow joiner: nothing published before the subscription is known is seen);
    then push ``messages`` and collect ``expect`` published messages that are not probes."""
    sub = socket(ctx, zmq.SUB, spec)
    sub.setsockopt(zmq.SUBSCRIBE, spec.get("subscribe", "").encode())
    sub.connect(spec["sub"])
    push = socket(ctx, zmq.PUSH, spec)
    push.connect(spec["push"])
    probe, probe_result = dec(spec["probe"]), spec["probe_result"]
    deadline = time.monotonic() + spec.get("deadline", 30)
    probes = 0
    while not sub.poll(100):
        if time.monotonic() > deadline:
            raise SystemExit("no published message arrived")
        push.send_multipart(probe)
        probes += 1
    for message in spec["messages"]:
        push.send_multipart(dec(message))
    received: list[list[str]] = []
    while len(received) < spec["expect"]:
        frames = enc(sub.recv_multipart())
        if frames[-1] != probe_result:
            received.append(frames)
    return {"received": received, "probes": probes}


def op_publish(ctx: zmq.Context, spec: dict[str, Any]) -> dict[str, Any]:
    """Bind a PUB at ``bind``; publish ``probe`` until ``out_file`` exists (the subscriber
    joined); publish ``messages``; wait until ``out_file`` holds ``until``."""
    pub = socket(ctx, zmq.PUB, spec)
    pub.bind(spec["bind"])
    deadline = time.monotonic() + spec.get("deadline", 30)
    probes = 0
    while not os.path.exists(spec["out_file"]):
        if time.monotonic() > deadline:
            raise SystemExit("the subscriber never received a probe")
        pub.send_multipart(dec(spec["probe"]))
        probes += 1
        time.sleep(0.05)
    for message in spec["messages"]:
        pub.send_multipart(dec(message))
    wait_for_file(spec["out_file"], spec["until"], spec.get("deadline", 30))
    return {"probes": probes}


OPS = {"req": op_req, "dealer": op_dealer, "vanish": op_vanish, "slow_reader": op_slow_reader,
       "push": op_push, "push_and_sub": op_push_and_sub, "publish": op_publish}


def main() -> None:
    """Run the spec given as the first argument; print its result as JSON."""
    spec = json.loads(sys.argv[1])
    ctx = zmq.Context()
    try:
        result = OPS[spec["op"]](ctx, spec)
    finally:
        ctx.destroy()  # each socket keeps its linger, so what was sent goes out
    print(json.dumps(result))


if __name__ == "__main__":
    main()
