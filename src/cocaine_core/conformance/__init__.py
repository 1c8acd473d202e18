"""The conformance kit: checks a worker program against the engine ↔ slave protocol.

``check(command, timeout)`` starts the command as the engine would (``COCAINE_ENDPOINT``,
``COCAINE_SLAVE_ID``, ``COCAINE_APP``), plays the engine, and returns one ``Result`` per
rule (``rules.RULES``); ``cocaine conformance -- COMMAND...`` prints them. The worker's
process group is killed at the end, however it ends, and the kit's folder removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cocaine_core.conformance.harness import Harness
from cocaine_core.conformance.rules import RULES, Result, run_rules

__all__ = ["RULES", "Result", "check"]


def check(command: Sequence[str], timeout: float = 10.0,
          report: Callable[[Result], None] = lambda result: None,
          tail: Callable[[list[str]], None] = lambda lines: None) -> list[Result]:
    """Run ``command`` as a worker and check it against every rule; ``report`` gets each
    result as it is known, ``tail`` the worker's last output lines at the end (before the
    worker is killed). FileNotFoundError or PermissionError if the command cannot start."""
    kit = Harness(command, timeout)
    try:
        kit.start()
        results = run_rules(kit, report)
        tail(kit.tail())
        return results
    finally:
        kit.close()
