"""The native frames, fuzzed: ``protocol.unpack`` of any bytes, and a real node's endpoint fed
random messages over a real DEALER socket. The node answers every message that asks for an
answer (all but a well-formed CANCEL) with a result or a 4xx/5xx error, never with "the node
failed" (500), never dies, and still answers a good request after each one."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocaine_core.errors import ProtocolError
from cocaine_core.protocol import Code, unpack
from cocaine_core.testing import RunningNode
from tests.fuzz.conversation import Conversation
from tests.fuzz.strategies import FUZZ, PACKABLE_NUMBERS, TEXT, msgpack_values

VALUES = msgpack_values()
IDS = st.one_of(st.integers(-2**63, 2**64 - 1), TEXT, st.binary(max_size=8), VALUES)
POLICIES = st.one_of(
    st.none(), VALUES,
    st.dictionaries(st.sampled_from(["urgent", "timeout", "deadline", "retry", "other"]),
                    st.one_of(PACKABLE_NUMBERS, VALUES), max_size=4))


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """A header frame: random bytes, a random msgpack value, or a request-shaped array with
    random codes, ids, apps, events, policies and lengths."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return msgpack.packb(draw(VALUES), use_bin_type=True)
    fields = [draw(st.one_of(st.sampled_from([Code.REQUEST, Code.CANCEL, 0, 5, 6, 7, -1,
                                               2**64 - 1, True]), PACKABLE_NUMBERS)),
              draw(IDS),
              draw(st.one_of(st.sampled_from(["fuzz-app", "@node", "nope", ""]), VALUES)),
              draw(st.one_of(st.sampled_from(["echo", "list", "info", "app-info", "nope"]),
                             VALUES)),
              draw(POLICIES), draw(VALUES)]
    if kind == 2:  # mostly well-formed requests, so the policy and routing are exercised
        fields[0] = Code.REQUEST
    length = draw(st.integers(0, len(fields)))
    return msgpack.packb(fields[:length], use_bin_type=True)


MESSAGES = st.tuples(headers(), st.lists(st.binary(max_size=64), max_size=3))


def expects_answer(header: bytes) -> bool:
    """Whether the node must answer this header (all but a CANCEL, or a piece or end of a
    streamed body, naming a usable id: those are never answered)."""
    try:
        fields = unpack(header)
    except ProtocolError:
        return True
    request_id = fields[1] if len(fields) >= 2 else None
    return not (fields[0] in (Code.CANCEL, Code.CHUNK, Code.CHOKE)
                and isinstance(request_id, int | str | bytes))


@FUZZ
@given(frame=st.one_of(st.binary(max_size=200),
                       VALUES.map(lambda v: msgpack.packb(v, use_bin_type=True))))
def test_unpack_returns_a_coded_list_or_raises_protocol_error(frame: bytes) -> None:
    try:
        fields = unpack(frame)
    except ProtocolError as exc:
        assert str(exc)
        return
    assert isinstance(fields, list) and fields and isinstance(fields[0], int)


@pytest.mark.timeout(300)
@FUZZ
@given(message=MESSAGES)
def test_the_endpoint_answers_any_message_and_keeps_serving(fuzz_node: RunningNode,
                                                            message: tuple[bytes, list[bytes]]
                                                            ) -> None:
    header, rest = message
    talk = Conversation(fuzz_node.endpoint)
    try:
        talk.socket.send_multipart([header, *rest])
        if expects_answer(header):
            talk.answer()
        talk.probe()
    finally:
        talk.close()
    assert fuzz_node.loop.is_running()
