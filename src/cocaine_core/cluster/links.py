"""The links a node keeps: to its peers, and to the candidates its discovery proposes.

Endpoints come from two kinds of source. *Trusted* ones (``--peer``, records in a shared
store, the links that members announce) are linked and kept, reconnecting, for as long as
they are wanted. *Candidates* (what mDNS hears: anyone on the LAN can say anything there)
cost a socket each and make this node connect wherever they point, so they are held to a
budget: at most ``MAX_CANDIDATES`` links not yet proven (no handshake under the cluster's key
has succeeded on them) at a time, ``MAX_CANDIDATES_PER_HOST`` to one address, each given
``CANDIDATE_WAIT`` seconds to prove itself;
one that does not is closed and not tried again for ``SHUN_FIRST`` seconds, doubling up to
``SHUN_MOST``. A link no source wants any more is closed after ``UNUSED_LINK`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cocaine_core.cluster.link import OnAnswer, OnLost, PeerLink

if TYPE_CHECKING:
    from cocaine_core.cluster.key import LinkSecurity

log = logging.getLogger("cocaine.cluster")

#: The most links a node keeps in all.
MAX_LINKS = 1024
#: The most links to candidates not yet proven at a time.
MAX_CANDIDATES = 32
#: The most of those to one host (a flood from one machine cannot take them all).
MAX_CANDIDATES_PER_HOST = 4
#: Seconds a candidate's link gets for its handshake to succeed.
CANDIDATE_WAIT = 10.0
#: Seconds a candidate that failed is left alone: the first time, and at most.
SHUN_FIRST, SHUN_MOST = 30.0, 600.0
#: The most candidates remembered as failed (the oldest are forgotten first).
MAX_SHUNNED = 4096
#: Seconds a link that no source wants any more is kept (it may be wanted again).
UNUSED_LINK = 30.0
#: Least seconds between two log lines about links that could not be made.
FAILED_LOG_EVERY = 60.0


class Links:
    """The node's links by endpoint (see the module's docstring)."""

    def __init__(self, security: LinkSecurity, on_answer: OnAnswer, on_lost: OnLost) -> None:
        self.security = security
        self.on_answer = on_answer
        self.on_lost = on_lost
        self.links: dict[str, PeerLink] = {}
        #: No more links are made (the node is leaving).
        self.closed = False
        #: Candidates given up on: endpoint -> (tried again after, the next wait).
        self.shunned: dict[str, tuple[float, float]] = {}
        self._unused: dict[str, float] = {}
        self._failures = 0
        self._failure_logged = 0.0

    def up(self, endpoint: str) -> PeerLink | None:
        """The link to ``endpoint`` if it is up."""
        link = self.links.get(endpoint)
        return link if link is not None and link.up else None

    def ensure(self, endpoint: str, *, trusted: bool, now: float | None = None) -> None:
        """Link to ``endpoint`` unless a link is there, the budget is spent, or it is a
        candidate left alone for now."""
        if endpoint in self.links or self.closed or len(self.links) >= MAX_LINKS:
            return
        now = time.monotonic() if now is None else now
        if not trusted:
            shunned = self.shunned.get(endpoint)
            if shunned is not None and now < shunned[0]:
                return
            unproven = [e for e, link in self.links.items() if not link.ever_up]
            host = _host(endpoint)
            if len(unproven) >= MAX_CANDIDATES or sum(
                    1 for e in unproven if _host(e) == host) >= MAX_CANDIDATES_PER_HOST:
                return
        try:
            link = PeerLink(endpoint, self.security, self.on_answer, self.on_lost,
                            trusted=trusted)
        except Exception as exc:
            self._failed(endpoint, exc, now)
            return
        self.links[endpoint] = link

    def sync(self, trusted: Iterable[str], candidates: Iterable[str],
             now: float) -> list[PeerLink]:
        """Link to what is wanted; close candidates that did not prove themselves in time
        and links nobody wants any more; return the links closed."""
        wanted = set(trusted)
        for endpoint in wanted:
            link = self.links.get(endpoint)
            if link is not None:
                link.trusted = True  # a member announced it: no longer a mere candidate
            self.ensure(endpoint, trusted=True, now=now)
        for endpoint in candidates:
            if endpoint not in wanted:
                wanted.add(endpoint)
                self.ensure(endpoint, trusted=False, now=now)
        closed = []
        for endpoint, link in list(self.links.items()):
            if not link.trusted and not link.ever_up and now - link.made > CANDIDATE_WAIT:
                self._shun(endpoint, now)
            elif endpoint in wanted:
                self._unused.pop(endpoint, None)
                continue
            elif now - self._unused.setdefault(endpoint, now) <= UNUSED_LINK:
                continue
            self._unused.pop(endpoint, None)
            closed.append(self.links.pop(endpoint))
        for link in closed:
            link.close()
        return closed

    def _shun(self, endpoint: str, now: float) -> None:
        wait = self.shunned.get(endpoint, (0.0, SHUN_FIRST))[1]
        self.shunned.pop(endpoint, None)
        while len(self.shunned) >= MAX_SHUNNED:
            del self.shunned[next(iter(self.shunned))]
        self.shunned[endpoint] = (now + wait, min(SHUN_MOST, wait * 2))

    def _failed(self, endpoint: str, exc: Exception, now: float) -> None:
        self._failures += 1
        if now - self._failure_logged >= FAILED_LOG_EVERY:
            self._failure_logged = now
            log.error("cannot link to %s: %s (%d link(s) could not be made since the last "
                      "such line)", endpoint, exc, self._failures)
            self._failures = 0

    def send_all(self, frames: list[bytes]) -> None:
        """Send ``frames`` over every link that is up."""
        for link in self.links.values():
            link.send(frames)

    def close(self) -> None:
        """Close every link; make no more."""
        self.closed = True
        for link in self.links.values():
            link.close()
        self.links.clear()

    def view(self) -> list[dict[str, Any]]:
        """For ``cocaine cluster nodes``: each link, whether it is up, refusals."""
        return [{"endpoint": endpoint, "up": link.up, "refused": link.refused,
                 "proven": link.ever_up} for endpoint, link in sorted(self.links.items())]

    def __len__(self) -> int:
        return len(self.links)


def _host(endpoint: str) -> str:
    return endpoint.removeprefix("tcp://").rpartition(":")[0]
