"""Printing the kit's verdicts: one line per rule, or JSON, and the worker's last output."""

from __future__ import annotations

import json
from collections.abc import Sequence

from cocaine_core.conformance.rules import Result

#: How each status starts its line (aligned).
_LABELS = {"ok": "ok  ", "fail": "FAIL", "skip": "skip"}


def line(result: Result) -> str:
    """``ok   NAME: detail``, ``FAIL NAME: detail`` or ``skip NAME: detail``."""
    return f"{_LABELS[result.status]} {result.rule}: {result.detail}"


def as_json(results: Sequence[Result]) -> str:
    """The results as a JSON list of ``{rule, status, detail}``."""
    return json.dumps([{"rule": r.rule, "status": r.status, "detail": r.detail}
                       for r in results], indent=2, ensure_ascii=False)


def summary(results: Sequence[Result]) -> str:
    """One closing line: how many rules passed, failed, were skipped."""
    counts = {status: sum(1 for r in results if r.status == status) for status in _LABELS}
    verdict = "the worker conforms" if not counts["fail"] else "the worker does not conform"
    return (f"{verdict}: {counts['ok']} ok, {counts['fail']} failed, "
            f"{counts['skip']} skipped")


def output_tail(lines: Sequence[str]) -> str:
    """The worker's last lines of output, framed, for a run where a rule failed."""
    if not lines:
        return "the worker printed nothing"
    return "\n".join([f"the worker's last {len(lines)} line(s) of output:",
                      *(f"  {text}" for text in lines)])
