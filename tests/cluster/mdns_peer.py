"""A discovery alone on an asyncio loop, run inside a test host's namespace.

``python mdns_peer.py KIND CLUSTER ADDRESS [PEER...]``: starts the ``mdns`` (or ``static``,
with the given ``PEER`` endpoints) discovery with a fresh record whose link is
``tcp://ADDRESS:10054``, prints ``{"id": ...}`` once started, then ``{"peers": {...}}`` (id ->
link) whenever the view changes, and on SIGTERM stops the discovery (goodbye) and prints
``{"stopped": true}``. ``$COCAINE_TEST_MDNS_TTL`` shortens the records' TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from types import SimpleNamespace

#: The TTL (seconds) the discovery's records live, if not the module's.
TTL_VARIABLE = "COCAINE_TEST_MDNS_TTL"


async def main(kind: str, cluster: str, address: str, peers: list[str]) -> None:
    from cocaine_core.cluster import mdns
    from cocaine_core.cluster.discovery import NodeRecord
    from cocaine_core.cluster.mdns import MdnsDiscovery
    from cocaine_core.cluster.static import StaticDiscovery

    if os.environ.get(TTL_VARIABLE):  # a shorter life for records: the tests wait less
        mdns.TTL = int(os.environ[TTL_VARIABLE])
        mdns.ANNOUNCE_EVERY = mdns.TTL / 3

    me = NodeRecord.new(f"host-{address.replace('.', '-')}", f"tcp://{address}:10053",
                        "test", cluster=cluster, link=f"tcp://{address}:10054")
    node = SimpleNamespace(static_peers=peers)
    discovery = MdnsDiscovery(node) if kind == "mdns" else StaticDiscovery(node)
    await discovery.start(me)
    print(json.dumps({"id": me.id, "info": discovery.info()}), flush=True)
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    seen = None
    while not done.is_set():
        view = {i: r.link for i, r in discovery.peers().items()}
        if view != seen:
            seen = view
            print(json.dumps({"peers": view, "count": len(view)}), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.05)
    await discovery.stop()
    print(json.dumps({"stopped": True}), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
    except Exception as exc:  # the test reads why it failed
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(1)
