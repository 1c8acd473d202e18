"""What the kit takes from a worker, message by message: a CHOKE_BATCH is checked whole
(``conformance/messages.py``) before its entries count as the CHOKEs they stand for."""

from __future__ import annotations

import pytest

from cocaine_core import protocol
from cocaine_core.conformance.messages import MAIN, ProtocolViolation, chokes, parse
from cocaine_core.protocol import Code


def _choke_batch(entries: object, *lasts: bytes) -> list[bytes]:
    return [MAIN, protocol.pack(Code.CHOKE_BATCH, entries), *lasts]


def test_a_choke_batch_stands_for_its_chokes_in_order_with_their_last_chunks():
    message = parse(_choke_batch([[3, True], [4, False], [5, True]], b"three", b"five"), 1.0)
    assert [(c.code, c.fields, c.payload) for c in chokes(message)] == [
        (Code.CHOKE, [Code.CHOKE, 3], b"three"), (Code.CHOKE, [Code.CHOKE, 4], None),
        (Code.CHOKE, [Code.CHOKE, 5], b"five")]


@pytest.mark.parametrize(("frames", "problem"), [
    (_choke_batch([[3, True], [4, True]], b"three"),
     "2 of its entries say with_last, but 1 payload frame(s) follow"),
    (_choke_batch([[3, False]], b"stray"),
     "0 of its entries say with_last, but 1 payload frame(s) follow"),
    (_choke_batch([[3, 1]], b"x"), "entry 0 [3, 1] is not [job_id: int, with_last: bool]"),
    (_choke_batch([[3, True], ["4", False]], b"x"),
     "entry 1 ['4', False] is not [job_id: int, with_last: bool]"),
    (_choke_batch([[3, False, "more"]]), "entry 0 [3, False, 'more'] is not [job_id"),
    (_choke_batch([[True, False]]), "entry 0 [True, False] is not [job_id"),
    (_choke_batch([]), "it has 0 entries; a CHOKE_BATCH stands for 1 to 64 CHOKEs"),
    (_choke_batch([[n, False] for n in range(65)]), "it has 65 entries"),
    (_choke_batch({"3": True}), "is not [[job_id, with_last], ...]: array"),
])
def test_a_malformed_choke_batch_is_a_violation_naming_what_is_wrong(frames, problem):
    with pytest.raises(ProtocolViolation) as caught:
        parse(frames, 1.0)
    assert "CHOKE_BATCH" in str(caught.value) and problem in str(caught.value), caught.value
