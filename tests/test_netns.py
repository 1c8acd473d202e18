"""The network-namespace LAN the cluster tests run nodes on (``cocaine_core.testing_netns``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cocaine_core.testing import process_gone, wait_until
from cocaine_core.testing_netns import Lan, ip

SERVE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000)); s.listen(); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"hello from " + sys.argv[1].encode()); c.close()
"""
CONNECT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], 7000), timeout=float(sys.argv[2]))
    print(c.recv(100).decode())
except OSError as exc:
    print("failed", type(exc).__name__); sys.exit(1)
"""
LISTEN_MULTICAST = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("", 7001))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton("239.1.2.3"), socket.inet_aton(sys.argv[1])))
print("ready", flush=True); s.settimeout(30)
print(s.recv(100).decode(), flush=True)
"""
SEND_MULTICAST = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
for _ in range(50):
    s.sendto(b"multicast from " + sys.argv[1].encode(), ("239.1.2.3", 7001)); time.sleep(0.1)
"""


def _serve(host):
    server = host.popen([sys.executable, "-c", SERVE, host.address], stdout=subprocess.PIPE,
                        text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    return server


def _connect(host, address, timeout=5.0):
    return host.popen([sys.executable, "-c", CONNECT, address, str(timeout)],
                      stdout=subprocess.PIPE, text=True).communicate(timeout=timeout + 20)[0]


def test_two_hosts_reach_each_other_over_tcp_across_the_bridge(lan):
    a, b = lan.add_host("a"), lan.add_host("b")
    assert a.address != b.address and a.netns != b.netns
    _serve(a)
    assert _connect(b, a.address).strip() == f"hello from {a.address}"
    # Each host has its own stack: a's address is not one of b's.
    assert a.address not in ip("-o", "addr", netns=b.netns)


def test_a_multicast_datagram_from_one_host_reaches_the_other(lan):
    a, b = lan.add_host("a"), lan.add_host("b")
    listener = a.popen([sys.executable, "-c", LISTEN_MULTICAST, a.address],
                       stdout=subprocess.PIPE, text=True)
    assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
    b.popen([sys.executable, "-c", SEND_MULTICAST, b.address])
    assert listener.stdout.readline().strip() == f"multicast from {b.address}"


def test_cut_stops_traffic_and_restore_brings_it_back(lan):
    a, b = lan.add_host("a"), lan.add_host("b")
    _serve(a)
    assert "hello" in _connect(b, a.address)
    a.cut()
    assert _connect(b, a.address, timeout=1.5).startswith("failed")
    a.restore()
    wait_until(lambda: "hello" in _connect(b, a.address, timeout=1.0), timeout=20,
               message="a to answer again once restored")


def test_close_removes_every_process_namespace_and_link(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the network-namespace tests need root")
    lan = Lan()
    try:
        a, b = lan.add_host("a"), lan.add_host("b")
        sleeper = a.popen(["sleep", "600"])
        # A process the harness did not start itself, left inside b's namespace:
        stray = subprocess.Popen(["ip", "netns", "exec", b.netns, "sleep", "600"])
        assert set(lan.names()) == {a.netns, b.netns, a.link, b.link, lan.bridge}
    finally:
        lan.close()
    assert lan.names() == []
    assert sleeper.poll() is not None
    wait_until(lambda: stray.poll() is not None, timeout=10, message="the stray to be killed")
    assert lan.bridge not in ip("-o", "link", "show")


def test_leftovers_of_a_dead_pid_are_swept_and_a_live_ones_kept():
    if os.geteuid() != 0:
        pytest.skip("the network-namespace tests need root")
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert process_gone(dead.pid)
    alive = subprocess.Popen(["sleep", "600"])
    names = {"dead_ns": f"coc{dead.pid}n99-1-x", "dead_link": f"coc{dead.pid}b99",
             "live_ns": f"coc{alive.pid}n99-1-x", "live_link": f"coc{alive.pid}b99"}
    try:
        for key in ("dead_ns", "live_ns"):
            ip("netns", "add", names[key])
        for key in ("dead_link", "live_link"):
            ip("link", "add", names[key], "type", "bridge")
        holder = subprocess.Popen(["ip", "netns", "exec", names["dead_ns"], "sleep", "600"])
        with Lan() as lan:
            assert lan.bridge.startswith(f"coc{os.getpid()}")
            present = set(ip("netns", "list").split()) | set(ip("-o", "link", "show").split())
            assert not any(names[k] in " ".join(present) for k in ("dead_ns", "dead_link"))
            assert names["live_ns"] in ip("netns", "list")
            assert names["live_link"] in ip("-o", "link", "show")
        wait_until(lambda: holder.poll() is not None, timeout=10,
                   message="the process left in the dead pid's namespace to be killed")
    finally:
        alive.kill()
        alive.wait()
        ip("netns", "del", names["live_ns"], check=False)
        ip("link", "del", names["live_link"], check=False)
        ip("netns", "del", names["dead_ns"], check=False)
        ip("link", "del", names["dead_link"], check=False)
