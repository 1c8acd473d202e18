"""Where an app's group lives and what it is called: one ``GroupPart`` per hierarchy.

Every group lives at ``<the node's own group>/cocaine/<node>:<app>`` in each hierarchy, never
at a hierarchy's root.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from cocaine_cgroups.hierarchy import Hierarchy
from cocaine_cgroups.translation import Write

#: The folder under the node's own group that holds every app group.
PARENT = "cocaine"


def safe_name(name: str) -> str:
    """``name`` with anything but letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def group_name(node: str, app: str) -> str:
    """The plain name of an app's group: ``<node>:<app>`` (``node`` is used as given, already
    made safe by the caller)."""
    return f"{node}:{safe_name(app)}"


@attrs.define
class GroupPart:
    """The app's group in one hierarchy: where, for which controllers, what to write."""

    hierarchy: Hierarchy
    path: Path
    controllers: list[str]
    writes: list[Write] = attrs.field(factory=list)
    #: False for a part made only to count (made when possible, skipped when not).
    required: bool = True
    #: Whether this process made the folder (and so may remove it).
    made: bool = False

    @property
    def label(self) -> str:
        """The controllers this part serves, or ``v2`` for the counting-only v2 part."""
        return ",".join(self.controllers) or f"v{self.hierarchy.version}"
