"""Balancing across hosts: each node in a network namespace of its own, joined by a bridge."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time

import pytest

from cocaine_core.client import AsyncClient, Client
from cocaine_core.errors import ServiceError
from cocaine_core.testing import wait_until, write_app
from tests.cluster.cluster_kit import (
    WHERE_APP,
    Load,
    cluster_info,
    cluster_view,
    deploy,
    start_nodes,
    wait_peered,
)


async def _burst(endpoint: str, body: bytes, count: int) -> list[bytes | BaseException]:
    async with AsyncClient(endpoint, wait=60) as client:
        return await asyncio.gather(*(client.call("where", "where", body)
                                      for _ in range(count)), return_exceptions=True)


def test_a_full_pool_has_its_requests_served_by_peers(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b", "c"])
    deploy(nodes, tmp_path, {"pool-limit": 1, "queue-limit": 50})
    wait_peered(nodes, app="where")
    a, addresses = nodes[0][1], {host.address for host, _ in nodes}
    body = f"{lan.gateway} 0.4".encode()
    started = time.monotonic()
    answers = asyncio.run(_burst(a.endpoint, body, 9))
    took = time.monotonic() - started
    assert all(isinstance(answer, bytes) for answer in answers), answers
    served = {answer.decode() for answer in answers if isinstance(answer, bytes)}
    assert served == addresses  # every node served some: a's one slave could not alone
    assert took < 9 * 0.4 * 0.7, f"9 jobs of 0.4 s on 3 one-slave nodes took {took:.2f} s"
    info = cluster_info(a)
    assert info["forwarded"] >= 4 and info["peers"] == 2


def test_a_request_runs_locally_while_the_local_pool_has_room(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    deploy(nodes, tmp_path, {"pool-limit": 4})
    wait_peered(nodes, app="where")
    (host_a, a) = nodes[0]
    answers = asyncio.run(_burst(a.endpoint, f"{lan.gateway} 0.2".encode(), 4))
    assert {answer.decode() for answer in answers} == {host_a.address}  # type: ignore[union-attr]
    assert cluster_info(a)["forwarded"] == 0


def test_a_node_killed_under_load_loses_no_request_that_had_received_nothing(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b", "c"])
    deploy(nodes, tmp_path, {"pool-limit": 2, "queue-limit": 100})
    wait_peered(nodes, app="where")
    (_, a), (host_b, b) = nodes[0], nodes[1]
    with Load(a.endpoint, f"{lan.gateway} 0.3".encode(), threads=10) as load:
        load.wait_for(lambda: load.served[host_b.address] >= 4, 60, "b to serve requests")
        b.kill()  # -9, with forwarded requests running there
        before = sum(load.served.values())
        load.wait_for(lambda: sum(load.served.values()) >= before + 30, 60,
                      "30 more answers after b died")
    assert not load.errors, load.errors[:5]
    info = cluster_info(a)
    assert info["retried"] >= 1, info  # b's requests ran again elsewhere
    wait_until(lambda: [n["state"] for n in cluster_view(a)["nodes"]
                        if n["endpoint"] == b.endpoint] in ([], ["silent"]), timeout=10,
               message="b to be seen silent")


def test_a_streamed_answer_cut_by_a_lost_node_fails_and_is_not_run_again(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    deploy(nodes, tmp_path, {"pool-limit": 1, "queue-limit": 10})
    wait_peered(nodes, app="where")
    (host_a, a), (host_b, b) = nodes
    body = f"{lan.gateway} 30".encode()
    with Client(a.endpoint, wait=60) as first, Client(a.endpoint, wait=60) as second:
        held = first.stream("where", "stream", body)
        assert next(held).decode() == host_a.address  # a's one slave is taken
        cut = second.stream("where", "stream", body)
        assert next(cut).decode() == host_b.address  # so b runs this one
        b.kill()
        with pytest.raises(ServiceError) as failed:
            next(cut)
        assert failed.value.code == 500 and "was lost" in failed.value.message
        held.close()
    assert cluster_info(a)["cut"] == 1


def test_a_stopped_node_is_left_and_its_waiting_requests_run_elsewhere(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b", "c"])
    deploy(nodes, tmp_path, {"pool-limit": 1, "queue-limit": 100})
    wait_peered(nodes, app="where")
    (_, a), (host_b, b) = nodes[0], nodes[1]
    with Load(a.endpoint, f"{lan.gateway} 0.2".encode(), threads=6) as load:
        load.wait_for(lambda: load.served[host_b.address] >= 2, 60, "b to serve requests")
        b.process.send_signal(19)  # SIGSTOP: its connections stay open, it answers nothing
        try:
            stopped_at = sum(load.served.values())
            load.wait_for(lambda: sum(load.served.values()) >= stopped_at + 20, 60,
                          "20 more answers while b is stopped")
        finally:
            b.process.send_signal(18)  # SIGCONT, so that it can be stopped
    assert not load.errors, load.errors[:5]
    assert cluster_info(a)["retried"] >= 1


def test_a_node_that_joins_takes_load_within_seconds(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    deploy(nodes, tmp_path, {"pool-limit": 1, "queue-limit": 100})
    wait_peered(nodes, app="where")
    a = nodes[0][1]
    key = tmp_path / "cluster.key"
    with Load(a.endpoint, f"{lan.gateway} 0.2".encode(), threads=6) as load:
        load.wait_for(lambda: sum(load.served.values()) >= 10, 60, "the load to flow")
        host_c = lan.add_host("c")
        c = host_c.node(tmp_path / "c", "--cluster", "blue", "--cluster-key", str(key),
                        "--peer", f"tcp://{nodes[0][0].address}:10054").start(timeout=60)
        deploy([(host_c, c)], tmp_path, {"pool-limit": 1, "queue-limit": 100})
        joined = time.monotonic()
        load.wait_for(lambda: load.served[host_c.address] >= 3, 30, "c to take load",
                      explain=lambda: {"a": cluster_view(a), "a-info": cluster_info(a),
                                       "c": cluster_view(c), "c-info": cluster_info(c),
                                       "a-log": a.log.read_text()[-4000:],
                                       "c-log": c.log.read_text()[-4000:]})
        took = time.monotonic() - joined
    assert not load.errors, load.errors[:5]
    assert took < 15, f"c took {took:.1f} s to take load"


def test_a_stopping_node_hands_its_peers_no_failures(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    deploy(nodes, tmp_path, {"pool-limit": 1, "queue-limit": 100})
    wait_peered(nodes, app="where")
    (_, a), (host_b, b) = nodes
    with Load(a.endpoint, f"{lan.gateway} 0.2".encode(), threads=4) as load:
        load.wait_for(lambda: load.served[host_b.address] >= 2, 60, "b to serve requests")
        assert b.stop() == 0  # SIGTERM: it leaves, finishing what it runs
        stopped = sum(load.served.values())
        load.wait_for(lambda: sum(load.served.values()) >= stopped + 10, 60,
                      "10 more answers after b stopped")
    assert not load.errors, load.errors[:5]


def test_a_forwarded_request_keeps_its_timeout_and_its_retry_policy(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    deploy(nodes, tmp_path, {"pool-limit": 1, "queue-limit": 10})
    wait_peered(nodes, app="where")
    (host_a, a), (_, b) = nodes
    with Client(a.endpoint, wait=60) as holder, Client(a.endpoint, wait=60) as client:
        held = holder.stream("where", "stream", f"{lan.gateway} 60".encode())
        assert next(held).decode() == host_a.address  # a's one slave is taken
        with pytest.raises(ServiceError) as late:
            client.call("where", "where", f"{lan.gateway} 5".encode(), timeout=0.5)
        assert late.value.code == 504  # run on b, stopped there at its timeout
        assert cluster_info(a)["forwarded"] == 1
        outcome: list[BaseException] = []

        def once() -> None:
            try:
                client.call("where", "where", f"{lan.gateway} 30".encode(), retry=False)
            except BaseException as exc:
                outcome.append(exc)

        caller = threading.Thread(target=once)
        caller.start()
        wait_until(lambda: cluster_info(a)["in-flight"] == 1, timeout=10,
                   message="the request to be forwarded")
        b.kill()
        caller.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], ServiceError), outcome
        assert outcome[0].code == 500 and "retry is off" in outcome[0].message
        held.close()
    assert cluster_info(a)["retried"] == 0


def test_a_node_stopped_under_load_ends_soon_and_fails_nothing_a_peer_ran(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    deploy(nodes, tmp_path, {"pool-limit": 1, "queue-limit": 100})
    wait_peered(nodes, app="where")
    (_, a), (host_b, _) = nodes
    with Load(a.endpoint, f"{lan.gateway} 0.2".encode(), threads=6) as load:
        load.wait_for(lambda: load.served[host_b.address] >= 5, 60, "b to serve requests")
        started = time.monotonic()
        assert a.stop() == 0
        took = time.monotonic() - started
    assert took < 10, f"a took {took:.1f} s to stop"
    assert not [e for e in load.errors if e.startswith("500")], load.errors[:5]


def test_a_restarted_node_serves_through_its_peers_while_its_apps_load(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    slow = "import time\ntime.sleep(4)  # a slow import\n" + WHERE_APP
    manifest = write_app(tmp_path / "slow", slow, {"where": {"type": "native-server"}},
                         engine={"pool-limit": 2})
    for _, node in nodes:
        node.cli("app", "deploy", str(manifest), "--name", "where")
    wait_peered(nodes, app="where")
    (host_a, _), (_, b) = nodes
    assert b.stop() == 0
    b.spawn()
    body = f"{lan.gateway} 0".encode()
    served_while_loading: list[str] = []

    def loading() -> bool:
        with Client(b.endpoint, wait=5) as client:
            try:
                return bool(client.control("info")["loading"])
            except ServiceError:
                return False

    wait_until(loading, timeout=30, message="b to listen while its app loads")
    while loading() and not served_while_loading:
        with Client(b.endpoint, wait=10) as client:
            try:
                served_while_loading.append(client.call("where", "where", body).decode())
            except ServiceError as exc:
                assert exc.code == 503, exc  # not peered yet: try again
                time.sleep(0.1)
    assert served_while_loading == [host_a.address]


def test_a_peer_whose_connection_is_reset_is_not_taken_for_lost(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    deploy(nodes, tmp_path, {"pool-limit": 1, "queue-limit": 10})
    wait_peered(nodes, app="where")
    (host_a, a), (host_b, _) = nodes
    answers: list[str] = []
    with Client(a.endpoint, wait=60) as holder:
        held = holder.stream("where", "stream", f"{lan.gateway} 60".encode())
        assert next(held).decode() == host_a.address  # a's one slave is taken

        def call() -> None:
            with Client(a.endpoint, wait=60) as client:
                answers.append(client.call("where", "where",
                                           f"{lan.gateway} 3".encode()).decode())

        caller = threading.Thread(target=call)
        caller.start()
        wait_until(lambda: cluster_info(a)["in-flight"] == 1, timeout=10,
                   message="the request to be forwarded to b")
        # b's announces to a: its connection to a's link is reset; b reconnects at once.
        killed = host_b.popen(["ss", "-K", "dst", host_a.address, "dport", "=", "10054"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert killed.wait(10) == 0
        caller.join(30)
        held.close()
    assert answers == [host_b.address]
    assert cluster_info(a)["retried"] == 0
    assert "fell silent" not in a.log.read_text()


def test_a_peer_drops_the_jobs_of_a_node_that_died_while_they_waited(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    deploy(nodes, tmp_path, {"pool-limit": 1, "queue-limit": 10})
    wait_peered(nodes, app="where")
    (_, a), (_, b) = nodes
    burst = threading.Thread(target=lambda: asyncio.run(
        _burst(a.endpoint, f"{lan.gateway} 2".encode(), 6)), daemon=True)
    burst.start()  # a runs one, forwards what b has room for, offloads the rest to b's queue
    wait_until(lambda: cluster_info(a)["forwarded"] >= 2, timeout=20,
               message="a to forward requests to b")
    a.kill()

    def abandoned() -> int:
        with Client(b.endpoint, wait=10) as client:
            return int(client.control("info")["apps"]["where"]["jobs"]["abandoned"])

    wait_until(lambda: abandoned() >= 1, timeout=15,
               message="b to drop the jobs of the node that died")
