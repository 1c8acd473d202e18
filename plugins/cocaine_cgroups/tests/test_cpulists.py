"""CPU and memory-node lists as the kernel spells them."""

import pytest
from cocaine_cgroups.cpulists import format_cpulist, parse_cpulist


@pytest.mark.parametrize(("text", "numbers"), [
    ("", set()), ("0", {0}), ("0-3", {0, 1, 2, 3}), ("0-1,4,6-7", {0, 1, 4, 6, 7}),
    (" 2 , 5-6 \n", {2, 5, 6}),
])
def test_parse(text: str, numbers: set[int]) -> None:
    assert parse_cpulist(text) == numbers


@pytest.mark.parametrize("text", ["a", "1-", "3-1", "1,,2", "-1", "0-999999"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpulist(text)


@pytest.mark.parametrize(("numbers", "text"), [
    (set(), ""), ({0}, "0"), ({0, 1, 2, 8}, "0-2,8"), ({3, 1, 5, 4}, "1,3-5"),
])
def test_format(numbers: set[int], text: str) -> None:
    assert format_cpulist(numbers) == text
    assert parse_cpulist(text) == numbers
