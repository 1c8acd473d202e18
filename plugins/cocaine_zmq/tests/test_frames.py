"""How message frames become a job's body, and ``frames_of`` turns them back."""

from __future__ import annotations

import msgpack
import pytest
from cocaine_zmq import frames_of, pack_frames


class FakeRequest:
    """What a handler's Request carries: data and meta."""

    def __init__(self, data: bytes, meta: dict) -> None:
        self.data = data
        self.meta = meta


@pytest.mark.parametrize("frames", [[], [b""], [b"one"], [b"a", b""], [b"\x92\x01\x02"],
                                    [b"x" * 70000, b"y", b"z"]])
def test_round_trip(frames):
    """Any frames come back as they were."""
    body, meta = pack_frames(frames)
    assert meta == {"frames": len(frames)}
    assert frames_of(FakeRequest(body, meta)) == frames


def test_one_frame_is_the_body_as_is():
    """A single frame is not packed: a REQ client's request is just request.data."""
    assert pack_frames([b"hello"]) == (b"hello", {"frames": 1})


def test_several_frames_are_a_msgpack_array():
    """Several frames are a msgpack array of bin, so request.unpack() gives them too."""
    body, _ = pack_frames([b"a", b"b"])
    assert msgpack.unpackb(body) == [b"a", b"b"]


def test_without_meta_the_body_is_one_frame():
    """A request that did not come from these drivers is one frame."""
    assert frames_of(FakeRequest(b"raw", {})) == [b"raw"]


def test_a_body_that_does_not_match_meta_is_an_error():
    """meta promises 3 frames, the body holds 2: ValueError, not silent nonsense."""
    body, _ = pack_frames([b"a", b"b"])
    with pytest.raises(ValueError, match="3 frames"):
        frames_of(FakeRequest(body, {"frames": 3}))
