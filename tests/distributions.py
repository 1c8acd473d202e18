"""Real plugin distributions for tests, written into a folder instead of installed by pip.

A folder on ``sys.path`` (or ``PYTHONPATH``) that holds ``<name>-<version>.dist-info/`` with
``METADATA`` and ``entry_points.txt`` is, to ``importlib.metadata``, an installed distribution:
the plugin host finds its ``cocaine`` entry points exactly as it finds a pip-installed one's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The environment variables that steer plugin loading; tests start without any of them.
PLUGIN_VARIABLES = ("COCAINE_LOAD_PLUGINS", "COCAINE_DISABLE_PLUGINS", "COCAINE_STRICT_PLUGINS")

#: The ``cocaine`` command of the venv running the tests.
COCAINE = Path(sys.executable).with_name("cocaine")


def unique_module(stem: str) -> str:
    """A module name no other test uses, so ``sys.modules`` never hands back a stale one."""
    return f"{stem}_{uuid.uuid4().hex[:10]}"


def write_distribution(
    site: Path,
    name: str,
    modules: Mapping[str, str],
    entry_points: Mapping[str, str],
    version: str = "1.0.0",
) -> Path:
    """Write the distribution ``name`` into ``site``: each module's code, and its dist-info.

    ``modules`` maps top-level module names to their source (dedented); ``entry_points`` maps
    entry-point names of the ``cocaine`` group to module names. Returns the dist-info folder.
    """
    site.mkdir(parents=True, exist_ok=True)
    for module, code in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(code), encoding="utf-8")
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = ["[cocaine]", *(f"{ep} = {module}" for ep, module in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return info


def write_plugin(site: Path, name: str, code: str, entry_point: str | None = None,
                 version: str = "1.0.0") -> str:
    """Write a one-module plugin distribution; return its (unique) module name.

    The entry point is named ``entry_point``, or the distribution's name without ``cocaine-``.
    """
    module = unique_module(name.replace("-", "_"))
    ep = entry_point or name.removeprefix("cocaine-")
    write_distribution(site, name, {module: code}, {ep: module}, version)
    return module


def clean_environment(pythonpath: Sequence[Path | str] = (),
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without plugin settings, with ``pythonpath`` and ``extra``.

    ``COLUMNS`` is wide so that rich tables are not cut when the output is not a terminal.
    """
    env = {k: v for k, v in os.environ.items()
           if k not in PLUGIN_VARIABLES and k != "PYTHONPATH"}
    env["COLUMNS"] = "250"
    env["PYTHONUNBUFFERED"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env.update(extra or {})
    return env


def run_cocaine(*args: str, pythonpath: Sequence[Path | str] = (),
                env: Mapping[str, str] | None = None, cwd: Path | str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the ``cocaine`` command of this venv; return its exit code, stdout and stderr."""
    return subprocess.run([str(COCAINE), *args], capture_output=True, text=True,
                          env=clean_environment(pythonpath, env), cwd=cwd, timeout=timeout,
                          check=False)
