"""The OOM killer's order within an app: slaves first, the template (which forks them) last.

The node lowers the template's ``oom_score_adj`` as soon as it starts (which takes
CAP_SYS_RESOURCE, which root in a container often lacks: without it the score is left as it
is), and each slave sets its own, as soon as it is forked, above the template's (raising
needs no privilege), so slaves never inherit the protection.
"""

from __future__ import annotations

import logging

log = logging.getLogger("cocaine.backend")

#: The template's ``oom_score_adj``: the kernel's OOM killer takes it only once no other
#: process of its group is left to take (its score is less than 0.1% of the memory it may
#: use). Not -1000, which the killer never takes: a template whose import alone passes the
#: app's memory limit would then stall its group instead of failing the load.
TEMPLATE_OOM_SCORE_ADJ = -999
#: How far above the template's ``oom_score_adj`` a slave's is, at least: each point counts
#: as 0.1% of the memory the group may use, so a slave goes first unless the template is
#: bigger than it by a tenth of the limit (it never is: a slave maps the template's pages).
SLAVE_OOM_SCORE_STEP = 100

def oom_score_adj(pid: int | None = None) -> int | None:
    """Process ``pid``'s ``oom_score_adj`` (this process's by default); None if unknown."""
    try:
        with open(f"/proc/{pid or 'self'}/oom_score_adj") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def protect_from_oom_killer(pid: int) -> bool:
    """Set process ``pid``'s ``oom_score_adj`` to ``TEMPLATE_OOM_SCORE_ADJ``; False if that
    takes a privilege (CAP_SYS_RESOURCE) this process lacks, or the process is gone."""
    current = oom_score_adj(pid)
    if current is None:
        return False
    if current == TEMPLATE_OOM_SCORE_ADJ:
        return True
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(TEMPLATE_OOM_SCORE_ADJ))
    except OSError as exc:
        log.debug("cannot lower the oom_score_adj of the template %d: %s; it keeps %d",
                  pid, exc.strerror or exc, current)
        return False
    return True


def slave_oom_score_adj(template: int | None, node: int | None) -> int:
    """The ``oom_score_adj`` a slave sets its own to: at least 0, at least the node's, and
    ``SLAVE_OOM_SCORE_STEP`` above the template's (which the node may have lowered)."""
    return min(1000, max(0, node or 0, (template or 0) + SLAVE_OOM_SCORE_STEP))
