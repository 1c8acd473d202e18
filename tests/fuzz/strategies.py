"""What the fuzz tests share: hypothesis settings, strategies of JSON- and msgpack-like
values."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Examples per property: moderate in CI (the folder takes about a minute), raised for a
#: longer hunt with ``COCAINE_FUZZ_EXAMPLES=5000``.
EXAMPLES = int(os.environ.get("COCAINE_FUZZ_EXAMPLES", "150"))

#: Settings of every property (``@FUZZ`` on the test).
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

#: Numbers at and past every edge: huge ints, floats that are not finite, bools (ints too).
NUMBERS = st.one_of(st.booleans(), st.integers(), st.integers(-2**70, 2**70),
                    st.sampled_from([0, -1, 1, 2**31, 2**63, 2**64, -2**63 - 1, 10**9, 10**30]),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -0.0, 1e-300, 1e300, float("nan"), float("inf")]))

#: Text with what breaks paths and names: NUL, slashes, dots, newlines, surrogates excluded
#: (JSON and msgpack cannot carry them).
TEXT = st.one_of(st.text(max_size=20),
                 st.sampled_from(["", ".", "..", "/", "a/../..", "\x00", "a\x00b", "\n",
                                  "app\n", " ", "-", "@node", "x" * 300, "1G", "512M", "-1",
                                  "python", "native-server", "echo"]))

SCALARS = st.one_of(st.none(), NUMBERS, TEXT)

#: Numbers msgpack can carry (integers from -2**63 to 2**64 - 1).
PACKABLE_NUMBERS = st.one_of(
    st.booleans(), st.integers(-2**63, 2**64 - 1),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 2**64 - 1, -2**63, 10**9, 10**18]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, float("nan"), float("inf")]))


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Arbitrary JSON-ish values: scalars, lists and string-keyed maps, nested."""
    return st.recursive(SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
        max_leaves=max_leaves)


def msgpack_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Arbitrary msgpack-able values: JSON-ish ones and bytes, maps keyed by anything
    hashable msgpack carries."""
    keys = st.one_of(st.none(), PACKABLE_NUMBERS.filter(lambda v: v == v), TEXT,
                     st.binary(max_size=8))
    scalars = st.one_of(st.none(), PACKABLE_NUMBERS, TEXT, st.binary(max_size=32))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
        max_leaves=max_leaves)
