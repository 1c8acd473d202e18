"""How the frames of a ZeroMQ message become a job's body, and back again in a handler.

A job's body is one byte string, so a message's frames are packed like this:

- one frame: the body is that frame, unchanged (what a REQ client sends most of the time);
- no frame: the body is empty;
- several frames: the body is a msgpack array of the frames (each a msgpack ``bin``).

``meta["frames"]`` always says how many frames there were, so a handler can tell a one-frame
message that happens to look like msgpack from a real multi-frame one. ``frames_of`` undoes it.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgpack


class HasBody(Protocol):
    """What ``frames_of`` needs of a request: its body and its meta."""

    data: bytes
    meta: dict[str, Any]


def pack_frames(frames: list[bytes]) -> tuple[bytes, dict[str, Any]]:
    """The body and meta of a job made from ``frames`` (see the module's docstring)."""
    count = len(frames)
    if count == 1:
        return frames[0], {"frames": 1}
    if count == 0:
        return b"", {"frames": 0}
    return msgpack.packb(frames, use_bin_type=True), {"frames": count}


def frames_of(request: HasBody) -> list[bytes]:
    """The frames a request was made from: ``[request.data]`` for a one-frame message."""
    count = request.meta.get("frames", 1)
    if count == 1:
        return [request.data]
    if count == 0:
        return []
    frames = msgpack.unpackb(request.data, raw=True)
    if not isinstance(frames, list) or len(frames) != count:
        raise ValueError(f"the body is not the {count} frames meta['frames'] promises")
    return [bytes(frame) for frame in frames]
