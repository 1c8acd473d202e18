"""Test helper: a LAN of network namespaces, so tests run nodes as separate hosts.

Use it from a ``conftest.py`` (as root: it makes namespaces, links and a bridge)::

    pytest_plugins = ["cocaine_core.testing", "cocaine_core.testing_netns"]

    def test_two_hosts(lan, tmp_path):
        a, b = lan.add_host("a"), lan.add_host("b")
        node = a.node(tmp_path / "a").start()      # reached from here through the bridge
        b.popen(["ping", "-c1", a.address]).wait()

A ``Lan`` is a Linux bridge in the root namespace holding ``10.X.Y.254/24`` (a subnet of
10.200.0.0/16 .. 10.250.0.0/16 no interface uses), and one network namespace per host with a
veth pair into the bridge, the address ``10.X.Y.N``, ``lo`` up, a default route through the
bridge and a route for multicast (mDNS crosses the bridge: its snooping is off).
``host.cut()`` takes the host's link down (a machine vanishing without a FIN) and
``host.restore()`` brings it back. ``close()`` kills every process started through it (by
PID: SIGTERM, SIGKILL after a grace), then every process left in its namespaces, and removes
the namespaces, links and bridge, also after a failure. Every name starts with ``coc``
and the creating process's pid; a new ``Lan`` first removes what dead processes left behind
(nothing else).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.testing import NodeProcess, process_gone

#: Hosts a LAN holds at most (its /24 keeps .254 for the bridge).
MAX_HOSTS = 200
#: Seconds a process gets after SIGTERM before SIGKILL at close.
TERM_GRACE = 5.0
#: Seconds any one ``ip`` command may take.
IP_TIMEOUT = 20.0
#: The names this helper makes: ``coc<pid>...`` (links and namespaces alike).
OWN_NAME = re.compile(r"coc(\d+)[a-z]")
_LOCK = Path("/tmp/coc-netns.lock")
_serial = [0]


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Run ``ip ARGS`` (in ``netns``, if given); its output. RuntimeError naming the command
    and its error if it fails (``check``)."""
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT)
    except FileNotFoundError:
        raise RuntimeError("`ip` is missing: install iproute2 (scripts/test does)") from None
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _netns_pids(netns: str) -> list[int]:
    out = ip("netns", "pids", netns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_all(pids: list[int], grace: float = TERM_GRACE) -> None:
    """SIGTERM ``pids``, then SIGKILL whichever still runs after ``grace`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not all(process_gone(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if not process_gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def sweep() -> list[str]:
    """Remove the namespaces and links a dead process of this helper left (names ``coc<pid>``
    whose pid no longer runs); the names removed. Nothing else is touched."""
    removed: list[str] = []
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        match = OWN_NAME.match(name)
        if match and process_gone(int(match.group(1))):
            _kill_all(_netns_pids(name), grace=1.0)
            ip("netns", "del", name, check=False)
            removed.append(name)
    for line in ip("-o", "link", "show", check=False).splitlines():
        fields = line.split(":")
        name = fields[1].strip().split("@")[0] if len(fields) > 1 else ""
        match = OWN_NAME.match(name)
        if match and process_gone(int(match.group(1))):
            ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def _used_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in ip("-o", "-4", "addr", "show", check=False).splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


class Host:
    """One host of a ``Lan``: a network namespace with one address on the bridge."""

    def __init__(self, lan: Lan, name: str, netns: str, link: str, address: str) -> None:
        self.lan = lan
        #: The name given to ``add_host``.
        self.name = name
        #: The host's network namespace.
        self.netns = netns
        #: Its link's end in the root namespace (on the bridge).
        self.link = link
        #: Its IPv4 address on the LAN.
        self.address = address

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in this host's namespace (``Popen`` keywords pass through); it is
        killed by PID at the LAN's close if still running."""
        process = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], **kw)
        self.lan.processes.append(process)
        return process

    def node(self, folder: Path, *extra: str, port: int = 10053,
             storage_uri: str | None = None) -> NodeProcess:
        """A ``cocaine node`` of this host listening on ``tcp://ADDRESS:PORT`` (``start()``
        it; the root namespace reaches it through the bridge). Stopped at the LAN's close."""
        node = NodeProcess(folder, *extra, listen=f"tcp://{self.address}:{port}",
                           wrapper=("ip", "netns", "exec", self.netns),
                           storage_uri=storage_uri)
        self.lan.nodes.append(node)
        return node

    def cut(self) -> None:
        """Take the host's link down: it vanishes from the LAN without closing anything."""
        ip("link", "set", self.link, "down")

    def restore(self) -> None:
        """Bring the host's link back up."""
        ip("link", "set", self.link, "up")


class Lan:
    """A bridge and namespaces joined to it (module docstring); a context manager."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise PermissionError("a Lan makes network namespaces: it needs root")
        sweep()
        _serial[0] += 1
        self.prefix = f"coc{os.getpid()}"
        self.tag = f"{_serial[0]:x}"
        #: The bridge's name in the root namespace.
        self.bridge = f"{self.prefix}b{self.tag}"
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen[Any]] = []
        self.nodes: list[NodeProcess] = []
        self.closed = False
        try:
            with open(_LOCK, "a") as lock:  # concurrent runs pick different subnets
                fcntl.flock(lock, fcntl.LOCK_EX)
                self.network = self._free_network()
                ip("link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0")
                ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    @property
    def gateway(self) -> str:
        """The bridge's address (each host's default route)."""
        return str(self.network[254])

    def _free_network(self) -> ipaddress.IPv4Network:
        used = _used_networks()
        start = os.getpid() % (51 * 256)
        for i in range(51 * 256):
            n = (start + i) % (51 * 256)
            net = ipaddress.IPv4Network(f"10.{200 + n // 256}.{n % 256}.0/24")
            if not any(net.overlaps(u) for u in used):
                return net
        raise RuntimeError("no free /24 in 10.200.0.0/16 .. 10.250.0.0/16")

    def add_host(self, name: str) -> Host:
        """A new host (namespace, veth into the bridge, address, routes)."""
        if len(self.hosts) >= MAX_HOSTS:
            raise ValueError(f"a Lan holds at most {MAX_HOSTS} hosts")
        index = len(self.hosts) + 1
        netns = f"{self.prefix}n{self.tag}-{index}-{re.sub(r'[^A-Za-z0-9_-]', '', name)[:20]}"
        outer, inner = f"{self.prefix}v{self.tag}-{index}", f"{self.prefix}i{self.tag}-{index}"
        if len(outer) > 15 or len(inner) > 15:
            outer, inner = f"coc{os.getpid()}v{index}", f"coc{os.getpid()}i{index}"
        address = str(self.network[index])
        ip("netns", "add", netns)
        host = Host(self, name, netns, outer, address)
        self.hosts.append(host)
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", netns)
        ip("link", "set", outer, "master", self.bridge)
        ip("link", "set", outer, "up")
        ip("link", "set", "lo", "up", netns=netns)
        ip("link", "set", inner, "name", "eth0", netns=netns)
        ip("addr", "add", f"{address}/24", "dev", "eth0", netns=netns)
        ip("link", "set", "eth0", "up", netns=netns)
        ip("route", "add", "default", "via", self.gateway, netns=netns)
        ip("route", "add", "224.0.0.0/4", "dev", "eth0", netns=netns)
        return host

    def close(self) -> None:
        """Kill what was started (by PID) and remove the namespaces, links and bridge."""
        if self.closed:
            return
        self.closed = True
        pids = [p.pid for p in self.processes if p.poll() is None]
        pids += [n.process.pid for n in self.nodes
                 if n.process is not None and n.process.poll() is None]
        _kill_all(pids)
        for p in self.processes:
            p.poll()
        for n in self.nodes:
            if n.process is not None:
                n.process.poll()
        for host in self.hosts:
            _kill_all(_netns_pids(host.netns), grace=2.0)
            ip("netns", "del", host.netns, check=False)
            ip("link", "del", host.link, check=False)
        ip("link", "del", self.bridge, check=False)
        for n in self.nodes:  # a node killed leaves its run folder behind
            shutil.rmtree(n.run_dir, ignore_errors=True)

    def names(self) -> list[str]:
        """The namespaces and links of this LAN that exist now (empty after ``close``)."""
        mine = [h.netns for h in self.hosts] + [h.link for h in self.hosts] + [self.bridge]
        present = set(ip("netns", "list", check=False).split())
        for line in ip("-o", "link", "show", check=False).splitlines():
            fields = line.split(":")
            if len(fields) > 1:
                present.add(fields[1].strip().split("@")[0])
        return [n for n in mine if n in present]

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def lan() -> Iterator[Lan]:
    """A fresh ``Lan`` (skipped unless root), removed after the test."""
    if os.geteuid() != 0:
        pytest.skip("the network-namespace tests need root (ip netns); CI runs them as root")
    with Lan() as made:
        yield made
