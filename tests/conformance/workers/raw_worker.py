"""A worker written in raw pyzmq from docs/protocol.md alone: the conformance app's events.

Single-threaded: one poll loop serves both sockets, runs ``sleep`` jobs as timers (so they
overlap) and sends heartbeats on the ``<id>/hb`` socket. It does not claim ``flow``. The
``BREAK`` flags make the bad workers of the kit's tests (each a small script setting one);
the two about streamed bodies make it claim ``stream`` and read such bodies badly (it keeps
a streamed body's pieces and answers once the body is complete: ``echo`` the whole body,
``sizes`` a chunk per piece).
"""

from __future__ import annotations

import os
import sys
import time

import msgpack
import zmq

#: Which rule to break (set by the bad workers): see ``serve``.
BREAK = {"heartbeats during jobs": False, "chunk order": False, "error codes": False,
         "terminate": False, "garbage": False, "flood": False,
         "hoards pieces": False, "grants on arrival": False}


def pack(*fields):
    """A header frame: the fields as a msgpack array."""
    return msgpack.packb(list(fields), use_bin_type=True)


def serve() -> int:
    """Shake hands, get configured, answer jobs until TERMINATE; return the exit status."""
    endpoint, slave_id = os.environ["COCAINE_ENDPOINT"], os.environ["COCAINE_SLAVE_ID"]
    parent = os.getppid()
    context = zmq.Context()
    main = context.socket(zmq.DEALER)
    main.setsockopt(zmq.ROUTING_ID, slave_id.encode())
    main.setsockopt(zmq.LINGER, 1000)
    main.connect(endpoint)
    beat_socket = context.socket(zmq.DEALER)
    beat_socket.setsockopt(zmq.ROUTING_ID, f"{slave_id}/hb".encode())
    beat_socket.setsockopt(zmq.LINGER, 0)
    beat_socket.connect(endpoint)
    streams = BREAK["hoards pieces"] or BREAK["grants on arrival"]
    main.send(pack(1, slave_id, os.getpid(), *([{"stream": True}] if streams else [])))
    bodies: dict[int, tuple[str, list[bytes]]] = {}  # streamed jobs: event, pieces
    if not main.poll(30_000):
        return 1
    header = msgpack.unpackb(main.recv_multipart()[0], raw=False)
    if header[0] != 2:
        return 1
    interval = float(header[1].get("heartbeat_interval", 1.0))
    main.send(pack(3, slave_id))  # ready
    next_beat = time.monotonic() + interval
    sleeping: dict[int, float] = {}  # job id → when it wakes
    while True:
        if os.getppid() != parent:
            return 1
        now = time.monotonic()
        if now >= next_beat:
            if not (BREAK["heartbeats during jobs"] and sleeping):
                beat_socket.send(pack(3, slave_id))
            next_beat = now + interval
        for job_id, wake in list(sleeping.items()):
            if wake <= now:
                del sleeping[job_id]
                main.send_multipart([pack(6, job_id), b"slept"])
        soonest = min([next_beat, *sleeping.values()])
        if not main.poll(max(1, min(50, int((soonest - now) * 1000)))):
            continue
        frames = main.recv_multipart()
        header = msgpack.unpackb(frames[0], raw=False)
        if header[0] == 8:
            if not BREAK["terminate"]:
                main.close()
                beat_socket.close()
                context.term()
                return 0
        elif header[0] in (5, 6) and header[1] in bodies:  # a piece, or the end, of a body
            job_id = header[1]
            event, pieces = bodies[job_id]
            if header[0] == 5:
                pieces.append(frames[1])
                if BREAK["grants on arrival"]:
                    main.send(pack(12, job_id, 1))
            elif event == "echo":
                del bodies[job_id]
                main.send_multipart([pack(6, job_id), b"".join(pieces)])
            else:
                del bodies[job_id]
                for piece in pieces:
                    main.send_multipart([pack(5, job_id), str(len(piece)).encode()])
                main.send(pack(6, job_id))
        elif header[0] == 11 and header[1] in bodies:
            del bodies[header[1]]
            main.send(pack(6, header[1]))
        elif header[0] == 4:
            job_id, event = header[1], header[2]
            body = frames[1] if len(frames) > 1 else b""
            streamed = len(header) > 4 and header[4].get("stream") is True
            if streamed and event in ("echo", "sizes"):
                bodies[job_id] = (event, [body] if body else [])
                if body and BREAK["grants on arrival"]:
                    main.send(pack(12, job_id, 1))
            elif event == "status" and streams:
                if int(body) > 599:
                    main.send(pack(7, job_id, 502, "not an HTTP status", ""))
                else:
                    main.send(pack(13, job_id, {"status": int(body),
                                                "headers": [["X-Conformance", "yes"]]}))
                    main.send_multipart([pack(6, job_id), b"status " + body])
            elif event == "echo" and BREAK["garbage"]:
                main.send_multipart([b"\xc1not msgpack", body])
            elif event == "echo" and BREAK["flood"]:
                chunk = b"x" * 2**20
                for _ in range(200):  # 200 MiB for any echo (the kit keeps at most 4)
                    main.send_multipart([pack(5, job_id), chunk])
                main.send(pack(6, job_id))
            elif event == "echo":
                main.send_multipart([pack(6, job_id), body])
            elif event == "stream":
                numbers = list(range(int(body)))
                if BREAK["chunk order"] and len(numbers) > 2:
                    numbers[1], numbers[2] = numbers[2], numbers[1]
                for i in numbers:
                    main.send_multipart([pack(5, job_id), str(i).encode()])
                main.send(pack(6, job_id))
            elif event == "sleep":
                sleeping[job_id] = time.monotonic() + int(body) / 1000
            elif event == "fail":
                code = 500 if BREAK["error codes"] else 502
                main.send(pack(7, job_id, code, body.decode("utf-8", "replace"), ""))
            else:
                code = 400 if BREAK["error codes"] else 404
                main.send(pack(7, job_id, code, f"no handler for {event!r}", ""))


if __name__ == "__main__":
    sys.exit(serve())
