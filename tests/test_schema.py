"""Declared keys (``cocaine_core/schema.py``): the kinds, ``Key`` and ``check_keys``."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cocaine_core import schema
from cocaine_core.errors import Problem
from cocaine_core.schema import Invalid, Key, check_keys

NOT_NUMBERS = [True, False, None, "3", [3], {"n": 3}, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize(("kind", "value", "expected"), [
    (schema.positive_int, 3, 3),
    (schema.positive_int, 3.0, 3),
    (schema.positive_int, 10**15, 10**15),
    (schema.non_negative_int, 0, 0),
    (schema.non_negative_int, 7.0, 7),
    (schema.positive_number, 0.5, 0.5),
    (schema.positive_number, 2, 2.0),
    (schema.non_negative_number, 0, 0.0),
    (schema.optional_positive_number, None, None),
    (schema.optional_positive_number, 1.5, 1.5),
    (schema.string, "x", "x"),
    (schema.boolean, False, False),
    (schema.mapping, {"a": 1}, {"a": 1}),
    (schema.strings, "a", ["a"]),
    (schema.strings, ["a", "b"], ["a", "b"]),
    (schema.one_of("a", "b"), "b", "b"),
])
def test_kinds_accept_and_convert(kind: schema.Kind, value: Any, expected: Any) -> None:
    result = kind(value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(("kind", "value", "message"), [
    (schema.positive_int, 0, "must be a positive integer, got 0"),
    (schema.positive_int, -1, "must be a positive integer, got -1"),
    (schema.positive_int, 2.5, "must be a positive integer, got 2.5"),
    (schema.positive_int, "ten", 'must be a positive integer, got "ten"'),
    (schema.non_negative_int, -1, "must be an integer of 0 or more, got -1"),
    (schema.positive_number, 0, "must be a number above 0, got 0"),
    (schema.non_negative_number, -0.5, "must be a number of 0 or more, got -0.5"),
    (schema.optional_positive_number, 0,
     "must be a number of seconds above 0, or null for none, got 0"),
    (schema.string, "", 'must be a non-empty string, got ""'),
    (schema.string, 5, "must be a non-empty string, got 5"),
    (schema.boolean, "true", 'must be true or false, got "true"'),
    (schema.boolean, 1, "must be true or false, got 1"),
    (schema.mapping, [], "must be an object ({...}), got []"),
    (schema.strings, [], "must be a string or a list of strings, got []"),
    (schema.strings, ["a", 1], 'must be a string or a list of strings, got ["a", 1]'),
    (schema.strings, ["a", ""], 'must be a string or a list of strings, got ["a", ""]'),
    (schema.one_of("a", "b"), "c", 'must be one of "a", "b", got "c"'),
])
def test_kinds_refuse_saying_what_would_be_accepted(kind: schema.Kind, value: Any,
                                                    message: str) -> None:
    with pytest.raises(Invalid) as caught:
        kind(value)
    assert str(caught.value) == message


@pytest.mark.parametrize("kind", [schema.positive_int, schema.non_negative_int,
                                  schema.positive_number, schema.non_negative_number,
                                  schema.optional_positive_number])
@pytest.mark.parametrize("value", NOT_NUMBERS, ids=repr)
def test_numeric_kinds_refuse_booleans_strings_and_non_finite_numbers(kind: schema.Kind,
                                                                      value: Any) -> None:
    if value is None and kind is schema.optional_positive_number:
        assert kind(value) is None
        return
    with pytest.raises(Invalid):
        kind(value)


@pytest.mark.parametrize("kind", [schema.positive_int, schema.positive_number])
def test_numeric_kinds_refuse_an_integer_too_large_for_a_float(kind: schema.Kind) -> None:
    with pytest.raises(Invalid):
        kind(10**400)


def test_one_of_documents_its_choices() -> None:
    assert schema.one_of("a", "b").__doc__ == "one of a, b"


def test_show_renders_json_and_shortens() -> None:
    assert schema.show("x") == '"x"'
    assert schema.show(None) == "null"
    assert schema.show({"a": [1, True]}) == '{"a": [1, true]}'
    long = schema.show("y" * 100)
    assert len(long) == 60 and long.endswith("...")
    assert schema.show({1, 2}).startswith("{")


def test_join_path_and_did_you_mean() -> None:
    assert schema.join_path("", "engine") == "engine"
    assert schema.join_path("engine", "pool-limit") == "engine.pool-limit"
    assert schema.did_you_mean("pool-limt", ["pool-limit", "pool-min"]) == \
        "; did you mean 'pool-limit'?"
    assert schema.did_you_mean("zzz", ["pool-limit"]) == ""


KEYS = (
    Key("name", schema.string, help="who"),
    Key("size", schema.positive_int, 3, "how many"),
    Key("idle", schema.positive_number, 600.0, aliases=("suicide",)),
)


def test_key_required() -> None:
    assert KEYS[0].required and not KEYS[1].required
    assert not Key("x", schema.optional_positive_number, None).required


def test_check_keys_fills_defaults() -> None:
    assert check_keys({"name": "a"}, KEYS, "p") == ({"name": "a", "size": 3, "idle": 600.0}, [])


def test_check_keys_converts_values_and_accepts_aliases() -> None:
    values, problems = check_keys({"name": "a", "size": 4.0, "suicide": 5}, KEYS, "")
    assert problems == []
    assert values == {"name": "a", "size": 4, "idle": 5.0}


def test_check_keys_reports_every_problem_by_path() -> None:
    values, problems = check_keys({"size": 0, "idel": 1, "colour": "red"}, KEYS, "tasks.t")
    assert problems == [
        Problem("tasks.t.size", "must be a positive integer, got 0"),
        Problem("tasks.t.idel", "unknown key; did you mean 'idle'?"),
        Problem("tasks.t.colour", "unknown key; accepted keys: idle, name, size"),
        Problem("tasks.t.name", "is required (who)"),
    ]
    assert values == {"idle": 600.0}


def test_check_keys_refuses_a_key_and_its_alias_together() -> None:
    _values, problems = check_keys({"name": "a", "idle": 1, "suicide": 2}, KEYS, "engine")
    assert [p.path for p in problems] == ["engine.suicide"]
    assert "give only one" in problems[0].message


def test_check_keys_leaves_ignored_keys_alone() -> None:
    values, problems = check_keys({"name": "a", "theirs": 1}, KEYS, "", ignore=["theirs"])
    assert problems == [] and "theirs" not in values
    _values, problems = check_keys({"name": "a", "their": 1}, KEYS, "", ignore=["theirs"])
    assert problems == [Problem("their", "unknown key; did you mean 'theirs'?")]


def test_check_keys_without_keys() -> None:
    assert check_keys({"x": 1}, (), "args") == ({}, [Problem("args.x", "unknown key")])


def test_problem_renders_with_and_without_a_path() -> None:
    assert str(Problem("engine.pool-limit", "must be a positive integer, got \"ten\"")) == \
        'engine.pool-limit: must be a positive integer, got "ten"'
    assert str(Problem("", "not valid JSON")) == "not valid JSON"


@pytest.mark.parametrize(("raw", "size"), [
    (None, None), (2**20, 2**20), (536870912, 512 * 2**20), ("512M", 512 * 2**20),
    ("2G", 2 * 2**30), ("2GiB", 2 * 2**30), ("1.5g", int(1.5 * 2**30)), ("4096K", 4 * 2**20),
    (" 64 MB ", 64 * 2**20),
])
def test_sizes_take_bytes_or_a_unit(raw, size):
    assert schema.optional_size(raw) == size


@pytest.mark.parametrize("raw", [0, 1000, -5, "lots", "", "12X", True, 2.5, [], "1e400",
                                 2**60, "nan", "infM"])
def test_sizes_refuse_what_is_no_size(raw):
    with pytest.raises(schema.Invalid, match="must be a size from 1 MiB to 64 TiB"):
        schema.optional_size(raw)
