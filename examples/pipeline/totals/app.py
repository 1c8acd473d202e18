"""App C of the pipeline: adds up the priced orders and serves the totals over ZeroMQ.

The totals live in the memory of the app's one slave (``pool-limit`` 1, kept warm by
``pool-min`` 1), so both handlers see them; they start again from zero if the app restarts.
"""

import json
from typing import Any

#: customer → {"orders": how many, "cents": how much in all}
TOTALS: dict[str, dict[str, int]] = {}


def tally(request: Any) -> None:
    """Add one priced order ``{customer, amount}`` to its customer's total."""
    priced = request.unpack()
    total = TOTALS.setdefault(priced["customer"], {"orders": 0, "cents": 0})
    total["orders"] += 1
    total["cents"] += priced["amount"]


def totals(request: Any) -> str:
    """The totals so far as JSON: ``{"ann": {"orders": 3, "cents": 1935}, ...}``."""
    return json.dumps(TOTALS, sort_keys=True)
