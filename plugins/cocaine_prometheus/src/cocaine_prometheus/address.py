"""The value of ``--metrics``: ``HOST:PORT`` (``[v6]:PORT`` for an IPv6 address), checked.

The option's parser gives the canonical text back (``"127.0.0.1:9101"``), so the value stays a
plain string wherever the node carries its options (a config file, a child process); the
listener splits it again with ``split_address``.
"""

from __future__ import annotations

import ipaddress
import re

#: A host name: labels of letters, digits and hyphens, dot-separated (RFC 1123).
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")

#: Ports a listener may ask for: 0 is any free port (the one taken is logged).
PORT_RANGE = (0, 65535)

_EXAMPLES = "e.g. 127.0.0.1:9101, [::1]:9101, localhost:0"


def split_address(text: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT``; ValueError with a message saying what is wrong and
    what to write instead (the CLI puts ``--metrics TEXT:`` before it)."""
    value = text.strip()
    if not value:
        raise ValueError(f"give HOST:PORT ({_EXAMPLES}), not an empty value")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"an IPv6 address is written [ADDRESS]:PORT "
                             f"({_EXAMPLES})")
        port_text = rest[1:]
        _check_ipv6(host)
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"give a port after a colon, HOST:PORT "
                             f"({_EXAMPLES})")
        if ":" in host:
            raise ValueError(f"write an IPv6 address in brackets, "
                             f"[ADDRESS]:PORT ({_EXAMPLES})")
        _check_host(host)
    return host, _port(port_text)


def parse_metrics_address(text: str) -> str:
    """The option's parser: ``text`` checked, as canonical ``HOST:PORT``."""
    host, port = split_address(text)
    return join_address(host, port)


def join_address(host: str, port: int) -> str:
    """``HOST:PORT``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (a loopback address, or ``localhost``)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(text: str) -> int:
    low, high = PORT_RANGE
    if not text.isdecimal() or len(text) > 5:
        raise ValueError(f"the port must be a number from {low} to {high} "
                         f"(0: any free port), got {text!r}")
    port = int(text)
    if not low <= port <= high:
        raise ValueError(f"the port must be from {low} to {high} "
                         f"(0: any free port), got {port}")
    return port


def _check_host(host: str) -> None:
    if not host:
        raise ValueError(f"give a host before the port: 127.0.0.1 for "
                         f"this machine only, 0.0.0.0 for every interface ({_EXAMPLES})")
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    if host.replace(".", "").isdecimal() or not _HOSTNAME.match(host):
        raise ValueError(f"{host!r} is neither an IPv4 address nor a "
                         f"host name ({_EXAMPLES})")


def _check_ipv6(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv6 address "
                         f"({_EXAMPLES})") from None
