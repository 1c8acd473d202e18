"""A slave written from docs/protocol.md alone, in plain pyzmq: what any language's worker does.

Run by the ``exec`` language as ``python raw_worker.py``. Events: ``echo``; ``env`` (the value
of the variable named by the body); ``whoami`` (uid, parent pid, working folder, session);
``sleep`` (seconds); ``hang`` (stops heart-beating and blocks); ``exit`` (adds its pid to the
file the body names, then exits mid-job); ``spawn`` (starts ``sleep 1000`` and answers its
pid; ``daemon`` does so in a session of its own); ``flood`` (sends the body's count of
malformed messages, then headers of too many items). ``RAW_WORKER_START`` makes it fail at
start-up: ``exit`` (a line on stderr, status 1), ``error`` (an ERROR for the configure) or
``silent`` (never shakes hands).
"""

import os
import subprocess
import sys
import threading
import time

import msgpack
import zmq

endpoint, slave_id = os.environ["COCAINE_ENDPOINT"], os.environ["COCAINE_SLAVE_ID"]
start = os.environ.get("RAW_WORKER_START", "")
if start == "exit":
    sys.stderr.write("raw worker: cannot open its database\n")
    sys.exit(1)
if start == "silent":
    time.sleep(3600)
context = zmq.Context()
main = context.socket(zmq.DEALER)
main.setsockopt(zmq.ROUTING_ID, slave_id.encode())
main.connect(endpoint)
main.send(msgpack.packb([1, slave_id, os.getpid()]))
settings = msgpack.unpackb(main.recv_multipart()[0])[1]
if start == "error":
    main.send(msgpack.packb([7, None, 500, "raw worker: no licence file", ""]))
    time.sleep(0.5)
    sys.exit(1)
interval = float(settings.get("heartbeat_interval", 1.0))
parent = os.getppid()
beating = threading.Event()
beating.set()


def beat() -> None:
    """Heart-beat from a socket of its own; exit with the parent."""
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.ROUTING_ID, f"{slave_id}/hb".encode())
    socket.connect(endpoint)
    while os.getppid() == parent:
        if beating.is_set():
            socket.send(msgpack.packb([3, slave_id]))
        time.sleep(interval)
    os._exit(0)


def answer(event: str, body: bytes) -> bytes:
    """The answer to one job."""
    if event == "echo":
        return body
    if event == "env":
        return os.environ.get(body.decode(), "<unset>").encode()
    if event == "whoami":
        return f"{os.getuid()} {os.getppid()} {os.getcwd()} {os.getsid(0)}".encode()
    if event == "sleep":
        time.sleep(float(body))
        return b"slept"
    if event == "hang":
        beating.clear()
        time.sleep(3600)
    if event == "exit":  # the body: a file to add this pid to first
        with open(body, "a") as marks:
            marks.write(f"{os.getpid()}\n")
        os._exit(3)
    if event == "flood":  # the body: how many malformed messages, then two too big to read
        for _ in range(int(body)):
            main.send(b"\xc1 not msgpack")
        for items in (100, 1_000_000):  # [3, 0, 0, ...]: a heartbeat of too many items
            main.send(b"\xdd" + items.to_bytes(4, "big") + b"\x03" + b"\x00" * (items - 1))
        return b"flooded"
    if event == "spawn":
        return str(subprocess.Popen(["sleep", "1000"]).pid).encode()
    if event == "daemon":  # a child in a session of its own
        return str(subprocess.Popen(["sleep", "1000"], start_new_session=True).pid).encode()
    raise KeyError(event)


main.send(msgpack.packb([3, slave_id]))
threading.Thread(target=beat, daemon=True).start()
while True:
    frames = main.recv_multipart()
    fields = msgpack.unpackb(frames[0])
    if fields[0] == 8:
        sys.exit(0)
    if fields[0] == 4:
        try:
            main.send_multipart([msgpack.packb([6, fields[1]]), answer(fields[2], frames[1])])
        except KeyError:
            main.send(msgpack.packb([7, fields[1], 404, f"no event {fields[2]}", ""]))
