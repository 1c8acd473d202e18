"""``Request``: what a handler receives, and its decoders."""

from __future__ import annotations

import json

import msgpack
import pytest
from cocaine_python import Request


def test_fields_and_decoders():
    request = Request(json.dumps({"a": [1, "é"]}).encode(), "work", {"frames": 1})
    assert (request.event, request.meta) == ("work", {"frames": 1})
    assert request.json() == {"a": [1, "é"]}
    assert request.text() == '{"a": [1, "\\u00e9"]}'
    assert repr(request) == "Request(event='work', 20 bytes, meta={'frames': 1})"


def test_meta_defaults_to_an_empty_dict():
    assert Request(b"", "work").meta == {}


def test_unpack_gives_str_not_bytes_for_msgpack_strings():
    request = Request(msgpack.packb({"name": "x", "raw": b"\x00"}), "work")
    assert request.unpack() == {"name": "x", "raw": b"\x00"}


def test_bad_bodies_raise_in_the_handler():
    """A body that is not what the handler expects raises there (and the job gets 502)."""
    with pytest.raises(json.JSONDecodeError):
        Request(b"{nope", "work").json()
    with pytest.raises(UnicodeDecodeError):
        Request(b"\xff", "work").text()
