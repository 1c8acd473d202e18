"""Lenient JSON (``cocaine_core/jsontext.py``): trailing commas, and errors with line and column."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocaine_core.errors import ManifestError
from cocaine_core.jsontext import loads_lenient, strip_trailing_commas

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def with_trailing_commas(value: Any, indent: int = 0) -> str:
    """``value`` as JSON with a comma after the last item of every non-empty container."""
    pad = "\n" + "  " * (indent + 1)
    if isinstance(value, list) and value:
        items = "".join(f"{pad}{with_trailing_commas(v, indent + 1)}," for v in value)
        return f"[{items}\n{'  ' * indent}]"
    if isinstance(value, dict) and value:
        items = "".join(f"{pad}{json.dumps(k)}: {with_trailing_commas(v, indent + 1)},"
                        for k, v in value.items())
        return f"{{{items}\n{'  ' * indent}}}"
    return json.dumps(value)


def error_of(text: str, source: str | None = None) -> str:
    """The single problem message of text that is not JSON."""
    with pytest.raises(ManifestError) as caught:
        loads_lenient(text, source=source)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].path == ""
    return caught.value.problems[0].message


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a": 1,}', {"a": 1}),
    ("[1, 2, 3,]", [1, 2, 3]),
    ('{"a": [1, {"b": 2,},],}', {"a": [1, {"b": 2}]}),
    ('{\n  "a": 1,\n  \n}', {"a": 1}),
    ("[1,\t\r\n ]", [1]),
    ('{"args": {"source": "/path/to/application",},}', {"args": {"source":
                                                                  "/path/to/application"}}),
])
def test_trailing_commas_are_accepted(text: str, expected: Any) -> None:
    assert loads_lenient(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a": "x,}"}', {"a": "x,}"}),
    ('["a,]", "b"]', ["a,]", "b"]),
    ('{"a": "quote \\" ,] inside"}', {"a": 'quote " ,] inside'}),
    ('{"a": "backslash \\\\", "b": [1,]}', {"a": "backslash \\", "b": [1]}),
])
def test_commas_inside_strings_are_left_alone(text: str, expected: Any) -> None:
    assert loads_lenient(text) == expected


def test_stripping_keeps_every_column_in_place() -> None:
    text = '{"a": [1,],\n "b": 2,}'
    stripped = strip_trailing_commas(text)
    assert stripped == '{"a": [1 ],\n "b": 2 }'
    assert len(stripped) == len(text)


def test_the_original_example_parses() -> None:
    text = """{
        "type": "python",
        "args": {
            "source": "/path/to/application",
        },
        "engine": {
            "heartbeat-timeout": 60,
            "pool-limit": 20,
            "queue-limit": 5,
            "resource-limits": {
                "cpuset": {
                    "cpuset.cpus": "0-3",
                    "cpuset.mems": "1",
                }
            }
        },
        "tasks": {
            "aggregate": {"type": "recurring-timer", "interval": 60000},
            "event": {"type" : "native-server"},
        }
    }"""
    data = loads_lenient(text)
    assert data["engine"]["resource-limits"] == {"cpuset": {"cpuset.cpus": "0-3",
                                                            "cpuset.mems": "1"}}
    assert data["args"] == {"source": "/path/to/application"}


@pytest.mark.parametrize(("text", "line", "column"), [
    ("", 1, 1),
    ("{", 1, 2),
    ('{"a" 1}', 1, 6),
    ('{\n  "type": "python"\n  "tasks": {}\n}', 3, 3),
    ('{\n  "a": [1, 2,,]\n}', 2, 14),
    ("{\n  'a': 1\n}", 2, 3),
    ('{"a": 1}\n{"b": 2}', 2, 1),
    ('{\n\n\n      "a": tru\n}', 4, 12),
])
def test_not_json_names_the_line_and_column(text: str, line: int, column: int) -> None:
    message = error_of(text)
    assert message.startswith(f"not valid JSON at line {line}, column {column}: "), message


def test_a_stripped_comma_does_not_move_the_reported_column() -> None:
    # The error is after a trailing comma on the same line: its column must be the original's.
    assert error_of('{"a": [1,], "b" 2}') == ("not valid JSON at line 1, column 17: Expecting "
                                              "':' delimiter")


def test_not_json_names_the_source() -> None:
    with pytest.raises(ManifestError) as caught:
        loads_lenient("{", source="app.json")
    assert str(caught.value).startswith("1 problem with the manifest in app.json:\n  - not valid "
                                        "JSON at line 1, column 2")


def test_json_nested_too_deeply_is_a_manifest_error() -> None:
    assert error_of("[" * 100_000 + "]" * 100_000) == "JSON nested too deeply"


def test_an_integer_literal_too_long_is_a_manifest_error() -> None:
    assert "too long" in error_of('{"pool-limit": ' + "9" * 5000 + "}")


@pytest.mark.parametrize("text", ["[,]", "{,}", '{"a": [,]}'])
def test_a_lone_comma_is_not_json(text: str) -> None:
    error_of(text)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(JSON_VALUES)
def test_any_json_with_trailing_commas_reads_as_without(value: Any) -> None:
    assert loads_lenient(with_trailing_commas(value)) == value


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(JSON_VALUES)
def test_valid_json_is_never_changed(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, indent=2), json.dumps(value,
                                                                            ensure_ascii=False)):
        assert strip_trailing_commas(text) == text
        assert loads_lenient(text) == value
