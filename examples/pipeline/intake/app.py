"""App A of the pipeline: takes orders (JSON) on a zeromq-sink, checks them, publishes them.

Each clean order is published by the sink on topic "order" (the event's name), msgpack-packed.
A bad order raises: the sink logs it and publishes nothing.
"""

from typing import Any


def order(request: Any) -> dict[str, Any]:
    """Check one order: ``{"customer": "Ann", "item": "tea", "qty": 2}``."""
    data = request.json()
    customer = str(data.get("customer", "")).strip().lower()
    item = str(data.get("item", "")).strip().lower()
    qty = data.get("qty")
    if not customer or not item or not isinstance(qty, int) or qty <= 0:
        raise ValueError(f"bad order {data!r}: it needs a customer, an item and a qty above 0")
    return {"customer": customer, "item": item, "qty": qty}
