"""App B of the pipeline: subscribes to the intake's orders and prices them.

Each priced order is published on topic "priced"; an item without a price raises, and the
subscriber logs it and publishes nothing.
"""

from typing import Any

#: Prices in cents.
PRICES = {"tea": 250, "coffee": 320, "cake": 475}


def priced(request: Any) -> dict[str, Any]:
    """Turn ``{customer, item, qty}`` into ``{customer, amount}`` (cents)."""
    order = request.unpack()
    price = PRICES.get(order["item"])
    if price is None:
        raise KeyError(f"no price for {order['item']!r}; we sell {', '.join(PRICES)}")
    return {"customer": order["customer"], "amount": price * order["qty"]}
