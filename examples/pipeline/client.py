"""Feeds orders into the pipeline and prints the totals that app C serves.

    python client.py [--work tcp://127.0.0.1:5560] [--totals tcp://127.0.0.1:5563] [--json]

PUB/SUB drops whatever is published before a subscriber has joined, so the script first sends
a "warm-up" order until it shows in the totals: then both subscriptions are live and the real
orders cannot be lost on the way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import zmq

ORDERS = [
    {"customer": "Ann", "item": "tea", "qty": 2},
    {"customer": "Bob", "item": "coffee", "qty": 1},
    {"customer": "ann", "item": "cake", "qty": 1},
    {"customer": "Cy", "item": "tea", "qty": 4},
    {"customer": "bob", "item": "cake", "qty": 2},
    {"customer": "Ann", "item": "coffee", "qty": 3},
    {"customer": "Dee", "item": "tea", "qty": 0},  # bad: intake refuses it
    {"customer": "Eve", "item": "whisky", "qty": 1},  # no price: pricing refuses it
]
GOOD = 6
WARM_UP = "warm-up"


def orders(totals: dict[str, Any]) -> int:
    """How many orders the totals count, warm-up orders left out."""
    return sum(t["orders"] for customer, t in totals.items() if customer != WARM_UP)


def ask_totals(ctx: zmq.Context, endpoint: str, timeout: float = 5.0) -> dict[str, Any]:
    """One REQ round trip to the totals server; raise on an error reply or no answer."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.connect(endpoint)
    try:
        sock.send(b"")
        status, *frames = sock.recv_multipart()
    except zmq.Again:
        raise TimeoutError(f"no answer from {endpoint} within {timeout:g} s") from None
    finally:
        sock.close()
    if status != b"ok":
        code, message = frames
        raise RuntimeError(f"error {code.decode()}: {message.decode()}")
    return json.loads(frames[0])


def wait_for(ctx: zmq.Context, endpoint: str, done: Any, deadline: float,
             nudge: Any = None) -> dict[str, Any]:
    """Ask for the totals until ``done(totals)``; call ``nudge()`` between asks."""
    while True:
        try:
            totals = ask_totals(ctx, endpoint)
            if done(totals):
                return totals
        except TimeoutError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the pipeline did not deliver in time: are the three apps running?")
        if nudge is not None:
            nudge()
        time.sleep(0.2)


def main() -> None:
    """Warm up, send the orders, wait for them in the totals, print the totals."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="tcp://127.0.0.1:5560", help="app A's sink")
    parser.add_argument("--totals", default="tcp://127.0.0.1:5563", help="app C's server")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait in all")
    parser.add_argument("--json", action="store_true", help="print the totals as JSON")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(args.work)

    def warm_up() -> None:
        push.send_json({"customer": WARM_UP, "item": "tea", "qty": 1})

    def warmed(totals: dict[str, Any]) -> int:
        return totals.get(WARM_UP, {"orders": 0})["orders"]

    before = wait_for(ctx, args.totals, lambda t: True, deadline)
    warm = warmed(before)
    warm_up()
    before = wait_for(ctx, args.totals, lambda t: warmed(t) > warm, deadline, nudge=warm_up)
    log = sys.stderr if args.json else sys.stdout
    print("the pipeline is live (warm-up orders went through)", file=log)
    for order in ORDERS:
        push.send_json(order)
    print(f"sent {len(ORDERS)} orders, {len(ORDERS) - GOOD} of them bad", file=log)
    after = wait_for(ctx, args.totals, lambda t: orders(t) >= orders(before) + GOOD, deadline)
    push.close()
    ctx.term()
    if args.json:
        print(json.dumps(after))
        return
    print(f"totals after {orders(after)} orders (and {warmed(after)} warm-up):")
    for customer, total in sorted(after.items()):
        print(f"  {customer:<8} {total['orders']:3d} orders {total['cents'] / 100:8.2f}")


if __name__ == "__main__":
    main()
