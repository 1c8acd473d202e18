"""The fixtures cocaine_core.testing gives plugin authors: an inline plugin on a live node."""

from __future__ import annotations

from typing import Any

from cocaine_core import hookimpl
from cocaine_core.drivers import Driver
from cocaine_core.plugins import get_host
from cocaine_core.testing import wait_until


class Ping(Driver):
    """Submits one job when the app starts."""

    async def start(self) -> None:
        self.engine.submit(self.make_job(b"ping"))


class Plugin:
    spawned: list[int] = []

    @hookimpl
    def cocaine_register_drivers(self, registry: Any) -> None:
        registry.add("ping-once", Ping)

    @hookimpl
    def cocaine_slave_spawned(self, app: Any, slave: Any) -> None:
        self.spawned.append(slave.pid)


def test_an_inline_plugin_drives_a_live_app(inline_plugin, cocaine_node, make_app, tmp_path):
    plugin = Plugin()
    record = inline_plugin(plugin, name="pinger")
    assert record.types == {"drivers": ["ping-once"]}
    marker = tmp_path / "pinged"
    code = f"def ping(request):\n    open({str(marker)!r}, 'wb').write(request.data)\n"
    manifest = make_app(code, tasks={"ping": {"type": "ping-once"}})
    cocaine_node.add_app("pinged", manifest)
    wait_until(lambda: marker.exists() and marker.read_bytes() == b"ping", message="the ping")
    assert len(plugin.spawned) >= 2  # the template and a slave
    cocaine_node.remove_app("pinged")


def test_inline_plugins_are_gone_after_their_test():
    assert "ping-once" not in get_host().registry("drivers")
    assert get_host().record("pinger") is None
