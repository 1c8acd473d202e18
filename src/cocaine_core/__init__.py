"""cocaine-core: your personal App Engine.

A plugin imports exactly one thing from here::

    from cocaine_core import hookimpl

    @hookimpl
    def cocaine_register_drivers(registry):
        registry.add("my-driver", MyDriver)

and declares its module in the ``cocaine`` entry-point group of its ``pyproject.toml``::

    [project.entry-points.cocaine]
    mine = "my_package.plugin"

Importing this package loads no plugin; plugins load on first use (``cocaine_core.plugins``).
"""

from typing import Any

import pluggy

__version__ = "0.1.0"

#: The marker for hook implementations. See ``cocaine_core.hookspecs`` for the hooks.
hookimpl = pluggy.HookimplMarker("cocaine")

__all__ = ["Registrar", "__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    # ``Registrar`` (what registration hooks receive, for annotations) loads only when named.
    if name == "Registrar":
        from cocaine_core.hookspecs import Registrar

        return Registrar
    raise AttributeError(f"module 'cocaine_core' has no attribute {name!r}")
