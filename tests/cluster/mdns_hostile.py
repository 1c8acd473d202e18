"""A hostile process on the LAN publishing what no node of the cluster would, with zeroconf.

``python mdns_hostile.py MODE CLUSTER ADDRESS [COUNT]``, MODE one of:
- ``other``: a well-formed record of another cluster (named ``other-<id>``) and one named
  as ``CLUSTER`` whose TXT says it is of another cluster;
- ``malformed``: names of ``CLUSTER``'s form whose TXT is missing fields or holds junk;
- ``flood``: COUNT names of ``CLUSTER``'s form with well-formed records (link
  ``tcp://ADDRESS:N``), as a node would, but many.
Records are broadcast (no probing) every 2 s until SIGTERM; prints ``ready`` after the
first round.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import uuid


def _info(name: str, address: str, port: int, properties: dict[str, str] | bytes):
    from zeroconf.asyncio import AsyncServiceInfo

    return AsyncServiceInfo("_cocaine._tcp.local.", f"{name}._cocaine._tcp.local.", port=port,
                            properties=properties, addresses=[socket.inet_aton(address)],
                            server=f"h-{name}.local.", host_ttl=60, other_ttl=60)


def _raw_txt(name: str, address: str):
    """A service whose TXT is not UTF-8 at all."""
    return _info(name, address, 9200, b"\x40" + b"\xff" * 64)  # one 64-byte junk property


def _record(node_id: str, cluster: str, address: str, port: int) -> dict[str, str]:
    return {"id": node_id, "name": "evil", "endpoint": f"tcp://{address}:{port}",
            "link": f"tcp://{address}:{port}", "cluster": cluster, "started": "1.0",
            "version": "x"}


def infos(mode: str, cluster: str, address: str, count: int) -> list:
    made = []
    if mode == "other":
        node_id = uuid.uuid4().hex[:16]
        made.append(_info(f"other-{node_id}", address, 9001,
                          _record(node_id, "other", address, 9001)))
        node_id = uuid.uuid4().hex[:16]
        made.append(_info(f"{cluster}-{node_id}", address, 9002,
                          _record(node_id, "other", address, 9002)))
    elif mode == "malformed":
        bad: list[dict] = [
            {"id": "0" * 16},  # fields missing
            {**_record("1" * 16, cluster, address, 9001), "name": "\u00e9" * 100},  # too long
            {**_record("2" * 16, cluster, address, 9002), "link": "not an endpoint"},
            {**_record("3" * 16, cluster, address, 9003), "started": "nan"},
            {**_record("4" * 16, cluster, address, 9004), "id": "5" * 16},  # not its name's
        ]
        for i, props in enumerate(bad):
            made.append(_info(f"{cluster}-{str(i) * 16}", address, 9100 + i, props))
        made.append(_raw_txt(f"{cluster}-{'6' * 16}", address))
    else:
        for i in range(count):
            node_id = uuid.uuid4().hex[:16]
            made.append(_info(f"{cluster}-{node_id}", address, 20000 + i,
                              _record(node_id, cluster, address, 20000 + i)))
    return made


async def main(mode: str, cluster: str, address: str, count: int) -> None:
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncZeroconf

    azc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    zc = azc.zeroconf
    await zc.async_wait_for_start()
    made = infos(mode, cluster, address, count)
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    first = True
    while not done.is_set():
        for i, info in enumerate(made):
            zc.async_send(zc.generate_service_broadcast(info, None))
            if i % 50 == 49:
                await asyncio.sleep(0.01)
        if first:
            print("ready", flush=True)
            first = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 2.0)
    await azc.async_close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3],
                     int(sys.argv[4]) if len(sys.argv) > 4 else 0))
