"""A cluster on etcd: its key kept in the store, its nodes found through etcd, load shared."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cocaine_etcd.testing import EtcdCluster

from cocaine_core.client import AsyncClient, Client
from cocaine_core.testing import free_port, wait_until, write_app

COCAINE = str(Path(sys.executable).with_name("cocaine"))
APP = """
import os, time

def work(request):
    time.sleep(0.3)
    return str(os.getpid())
"""


def test_a_cluster_on_etcd_keeps_its_key_in_the_store_and_shares_load(
        etcd: EtcdCluster, node_process: Any, tmp_path: Path) -> None:
    uri = etcd.uri("cocaine")
    made = subprocess.run([COCAINE, "cluster", "key", "--storage", uri, "--cluster", "blue"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    again = subprocess.run([COCAINE, "cluster", "key", "--storage", uri, "--cluster", "blue"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "already holds a key" in again.stderr
    nodes = [node_process("--cluster", "blue", "--discovery", "etcd", "--cluster-listen",
                          f"tcp://127.0.0.1:{free_port()}", storage_uri=uri,
                          folder=tmp_path / name) for name in ("a", "b")]
    a = nodes[0]
    a.cli("app", "deploy", str(write_app(tmp_path / "app", APP,
                                         {"work": {"type": "native-server"}},
                                         engine={"pool-limit": 1, "queue-limit": 50})),
          "--name", "work")

    def peered() -> bool:
        for node in nodes:
            view = json.loads(node.cli("cluster", "nodes", "--json").stdout)
            if [n["apps"].get("work", {}).get("state") for n in view["nodes"]] != \
                    ["running", "running"]:
                return False
        return True

    wait_until(peered, timeout=30, interval=0.3, message="both nodes to run the app and peer")

    async def burst() -> list[bytes]:
        async with AsyncClient(a.endpoint, wait=60) as client:
            return await asyncio.gather(*(client.call("work", "work") for _ in range(6)))

    started = time.monotonic()
    pids = set(asyncio.run(burst()))
    took = time.monotonic() - started
    assert len(pids) == 2 and took < 6 * 0.3 * 0.8, (pids, took)
    with Client(a.endpoint, wait=20) as client:
        cluster = client.control("info")["cluster"]
    assert cluster["forwarded"] >= 2 and cluster["peers"] == 1
