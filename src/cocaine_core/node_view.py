"""``NodeView``: a running node as the node-level hooks see it (``cocaine_node_started``,
``cocaine_node_stopping``): read-only, and cheap to ask. A leaf module: it imports the node
only for type checking, so ``hookspecs`` can name it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cocaine_core.node import Node


class NodeView:
    """A running node as plugins see it: read-only, and cheap to ask."""

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def name(self) -> str:
        """The node's name."""
        return self._node.name

    @property
    def endpoint(self) -> str:
        """The endpoint the node listens on (a ``:0`` port resolved)."""
        return self._node.listen

    @property
    def options(self) -> Mapping[str, Any]:
        """The plugin options given to ``cocaine node`` or ``cocaine run``, parsed, by name
        (``cocaine_register_node_options``); an option not given is absent."""
        return self._node.options

    @property
    def run_dir(self) -> Path:
        """The node's private run folder (mode 0700)."""
        return self._node.run_dir

    @property
    def curve(self) -> bool:
        """Whether the node runs with CurveZMQ (``--curve``)."""
        return self._node.endpoint.curve is not None

    def info(self) -> dict[str, Any]:
        """The node's state now: exactly what ``cocaine info`` returns."""
        return self._node.info()
