"""A worker written in raw pyzmq from docs/protocol.md alone: the conformance app's events.

Single-threaded: one poll loop serves both sockets, runs ``sleep`` jobs as timers (so they
overlap) and sends heartbeats on the ``<id>/hb`` socket. It does not claim ``flow``. The
``BREAK`` flags make the bad workers of the kit's tests (each a small script setting one);
the two about streamed bodies make it claim ``stream`` and read such bodies badly (it keeps
a streamed body's pieces and answers once the body is complete: ``echo`` the whole body,
``sizes`` a chunk per piece). The ones about batches make it claim ``batch`` (but for
``unasked batch``): it answers an INVOKE_BATCH of ``echo`` jobs with one CHOKE_BATCH, and
``sleep`` jobs due within 0.1 s of each other together (the ``concurrency`` rule's), in one
CHOKE_BATCH too; each bad one breaks the INVOKE_BATCH's answer in its own way.
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
         "hoards pieces": False, "grants on arrival": False,
         "batch": False, "batch twice": False, "batch mixed up": False, "batch bad entry": False,
         "batch drop": False, "unasked batch": False}
#: Sleeps due within this many seconds of the first are answered with it (a little early).
TOGETHER = 0.1


def batches() -> bool:
    """Whether the handshake claims ``batch``."""
    return any(on for name, on in BREAK.items() if name.startswith("batch"))


def choke_batch(socket, answers: list[tuple[int, bytes]], broken: bool = True) -> None:
    """Answer ``(job_id, last chunk)`` pairs with one CHOKE_BATCH (or a CHOKE, for one), an
    empty last chunk as none; ``broken``: as the ``BREAK`` flags say."""
    if len(answers) == 1:
        socket.send_multipart([pack(6, answers[0][0]), answers[0][1]])
        return
    entries = [[job_id, bool(last)] for job_id, last in answers]
    lasts = [last for _, last in answers if last]
    if not broken:
        socket.send_multipart([pack(15, entries), *lasts])
        return
    if BREAK["batch mixed up"]:  # the first and third answers swapped
        lasts[0], lasts[2] = lasts[2], lasts[0]
    if BREAK["batch twice"]:  # the first job answered again, in the same CHOKE_BATCH
        entries.append(entries[0])
        lasts.append(lasts[0])
    if BREAK["batch bad entry"]:  # an entry without its with_last
        entries[1] = [entries[1][0]]
    if BREAK["batch drop"]:  # the last job never answered
        del entries[-1], lasts[-1]
    socket.send_multipart([pack(15, entries), *lasts])


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
    features = {**({"stream": True} if streams else {}), **({"batch": True} if batches() else {})}
    main.send(pack(1, slave_id, os.getpid(), *([features] if features else [])))
    bodies: dict[int, tuple[str, list[bytes]]] = {}  # streamed jobs: event, pieces
    if not main.poll(30_000):
        return 1
    header = msgpack.unpackb(main.recv_multipart()[0], raw=False)
    if header[0] != 2:
        return 1
    interval = float(header[1].get("heartbeat_interval", 1.0))
    batch = header[1].get("batch") is True or BREAK["unasked batch"]
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
        due = [job_id for job_id, wake in sleeping.items() if wake <= now]
        if due and batch:  # those due soon go with them
            due = [job_id for job_id, wake in sleeping.items() if wake <= now + TOGETHER]
            choke_batch(main, [(job_id, b"slept") for job_id in due], broken=False)
        for job_id in due:
            del sleeping[job_id]
            if not batch:
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
        elif header[0] == 14:  # an INVOKE_BATCH: [14, [[job_id, event, meta], ...]] + bodies
            choke_batch(main, [(job_id, body) for (job_id, _, _), body
                               in zip(header[1], frames[1:], strict=True)])
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
