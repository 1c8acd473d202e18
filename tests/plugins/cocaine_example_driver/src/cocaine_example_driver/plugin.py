"""The ``oneshot`` driver: submits its event ``times`` times when the app starts. Also a node
option, ``--example-greeting WORD``, which the plugin logs once the node listens: a plugin
adds options to ``cocaine node`` and ``cocaine run`` and runs beside the node."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cocaine_core import hookimpl
from cocaine_core.drivers import Driver
from cocaine_core.errors import Problem
from cocaine_core.plugin_options import PluginOption
from cocaine_core.schema import Key, positive_int, string

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig
    from cocaine_core.node_view import NodeView

log = logging.getLogger("cocaine.example")


class OneShot(Driver):
    """Fires ``times`` jobs with ``payload`` as their body when the app starts."""

    keys: ClassVar[tuple[Key, ...]] = (
        Key("payload", string, "", "the body of each job"),
        Key("times", positive_int, 1, "how many jobs to fire"),
    )

    @classmethod
    def validate(cls, options: dict[str, Any], root: Path) -> list[Problem]:
        """Refuse more than 1000 shots."""
        if options["times"] > 1000:
            return [Problem("times", "must be at most 1000")]
        return []

    def __init__(self, task: TaskConfig, engine: EngineHandle) -> None:
        super().__init__(task, engine)
        self.fired = 0

    async def start(self) -> None:
        """Submit the jobs."""
        for _ in range(self.options["times"]):
            self.engine.submit(self.make_job(self.options["payload"].encode()))
            self.fired += 1

    def info(self) -> dict[str, Any]:
        """How many jobs were fired."""
        return {**super().info(), "fired": self.fired}


@hookimpl
def cocaine_register_drivers(registry: Any) -> None:
    """Register ``oneshot``."""
    registry.add("oneshot", OneShot)


def _greeting(text: str) -> str:
    if not text.isalpha() or len(text) > 32:
        raise ValueError("a greeting is one word of 1 to 32 letters, such as hello")
    return text


@hookimpl
def cocaine_register_node_options(registry: Any) -> None:
    """Register ``--example-greeting``."""
    registry.add("example-greeting", PluginOption(
        help="A word the example plugin logs once the node listens.", metavar="WORD",
        parse=_greeting))


@hookimpl
def cocaine_node_started(node: NodeView) -> None:
    """Log the greeting, if one was given."""
    greeting = node.options.get("example-greeting")
    if greeting:
        log.info("example plugin: %s from node %s on %s", greeting, node.name, node.endpoint)
