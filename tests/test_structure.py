"""The seams hold: light imports, small modules, and contracts the implementations follow."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from cocaine_core.backends import BackendEvents, SlaveBackend
from cocaine_core.backends.exec_backend import ExecBackend
from cocaine_core.backends.process import ProcessBackend
from cocaine_core.drivers import Driver, EngineHandle
from cocaine_core.engine import Engine
from cocaine_core.engine.pool import SlavePool

ROOT = Path(__file__).resolve().parents[1]


def loaded_by(module: str) -> set[str]:
    """The cocaine_core modules a fresh interpreter loads to import ``module``."""
    code = (f"import sys, {module}; "
            f"print(' '.join(m for m in sys.modules if m.startswith('cocaine_core')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return set(out.split())


def test_importing_the_client_loads_neither_the_node_nor_the_engine():
    loaded = loaded_by("cocaine_core.client")
    assert not {m for m in loaded if m.startswith(("cocaine_core.node", "cocaine_core.engine",
                                                   "cocaine_core.control",
                                                   "cocaine_core.plugins"))}, loaded


def test_every_module_of_the_core_is_small():
    big = {str(path.relative_to(ROOT)): n for path in (ROOT / "src").rglob("*.py")
           if (n := len(path.read_text().splitlines())) > 400}
    assert not big, f"modules over 400 lines (split them by concern): {big}"


def _public(cls: type) -> dict[str, inspect.Signature]:
    members = {name: inspect.signature(member) for name, member in vars(cls).items()
               if callable(member) and (not name.startswith("_") or name == "__init__")}
    if "__init__" in members and list(members["__init__"].parameters) == [
            "self", "args", "kwargs"]:
        del members["__init__"]  # a Protocol's placeholder: the contract sets none
    return members


@pytest.mark.parametrize(("implementation", "contract"), [
    (ProcessBackend, SlaveBackend),
    (ExecBackend, SlaveBackend),
    (SlavePool, BackendEvents),
])
def test_implementations_follow_their_contract_exactly(implementation, contract):
    for name, signature in _public(contract).items():
        assert hasattr(implementation, name), f"{implementation.__name__} lacks {name}"
        theirs = inspect.signature(getattr(implementation, name))
        assert list(theirs.parameters) == list(signature.parameters), (
            f"{implementation.__name__}.{name}{theirs} differs from the contract's "
            f"{name}{signature}")


def test_the_process_backend_gets_everything_in_its_constructor():
    # Nothing is attached after construction: the engine passes its events object, period.
    source = inspect.getsource(ProcessBackend)
    assert "on_template_lost" not in source and "on_spawn_failed" not in source


def test_drivers_use_only_the_engine_handle():
    members = {name for name, _ in inspect.getmembers(EngineHandle)
               if not name.startswith("_")}
    assert members == {"name", "app", "config", "submit", "has_room", "cancel"}
    made = inspect.getsource(Engine.__init__)
    for name in members:
        assert hasattr(Engine, name) or f"self.{name} =" in made, (
            f"Engine must provide {name} for its drivers")
    assert inspect.signature(Driver.__init__).parameters["engine"].annotation in (
        "EngineHandle", EngineHandle)
