"""The one error this plugin raises on purpose."""

from __future__ import annotations

from cocaine_core.errors import CocaineError


class CgroupError(CocaineError):
    """An app's cgroup could not be made, joined or removed; the message says how to fix it."""
