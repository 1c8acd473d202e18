"""A DEALER that talks to a node's endpoint in raw frames and checks every answer."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import zmq

from cocaine_core.protocol import CONTROL_APP, Code
from cocaine_core.trust.keys import Signer, default_key_path


class Conversation:
    """A DEALER talking to the node, checking every message that comes back."""

    def __init__(self, endpoint: str) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.probes = itertools.count()
        #: The data frame of the last message received (b"" if it had none).
        self.last_data = b""

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)

    def receive(self, timeout: float) -> list[Any] | None:
        """The next answer's header, checked (None: none within ``timeout``)."""
        if not self.socket.poll(int(timeout * 1000)):
            return None
        frames = self.socket.recv_multipart()
        self.last_data = frames[1] if len(frames) > 1 else b""
        fields = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
        assert isinstance(fields, list) and len(fields) >= 2, fields
        assert fields[0] in (Code.CHUNK, Code.CHOKE, Code.ERROR), fields
        if fields[0] == Code.ERROR:
            assert len(fields) == 4 and isinstance(fields[2], int), fields
            assert isinstance(fields[3], str) and fields[3], fields
            assert 400 <= fields[2] <= 599 and fields[2] != 500, (
                f"the node answered {fields[2]}: {fields[3]}")
        return fields

    def answer(self, timeout: float = 15.0) -> list[Any]:
        """Wait for the end of an answer (CHOKE or ERROR)."""
        while True:
            fields = self.receive(timeout)
            assert fields is not None, f"no answer within {timeout:g} s"
            if fields[0] != Code.CHUNK:
                return fields

    def probe(self) -> None:
        """A good request, answered with its own data (the node still serves)."""
        rid = f"probe-{next(self.probes)}"
        self.socket.send_multipart([msgpack.packb([Code.REQUEST, rid, "fuzz-app", "echo",
                                                   None]), rid.encode()])
        while True:
            fields = self.answer()
            if fields[1] == rid:
                assert fields[0] == Code.CHOKE, fields
                return

    def request(self, app: str, event: str, body: bytes, timeout: float = 60.0) -> list[Any]:
        """Send one request and return its answer's end: [CHOKE, id] with the data appended,
        or the ERROR header (checked: never 500)."""
        rid = f"request-{next(self.probes)}"
        policy = None
        if app == CONTROL_APP:  # signed as the CLI would: what is fuzzed is the arguments
            policy = {"auth": Signer.load(default_key_path()).sign(event, body)}
        self.socket.send_multipart([msgpack.packb([Code.REQUEST, rid, app, event, policy]),
                                    body])
        data = b""
        while True:
            fields = self.receive(timeout)
            assert fields is not None, f"no answer to {app}/{event} within {timeout:g} s"
            if fields[1] != rid:
                continue
            if fields[0] == Code.CHUNK:
                data += self.last_data
                continue
            if fields[0] == Code.CHOKE:
                return [*fields, data + self.last_data]
            return fields
