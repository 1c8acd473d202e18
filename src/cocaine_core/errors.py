"""Every error cocaine raises on purpose, in one hierarchy.

Each message is written for the person who will read it: it names what is wrong and says
what to do. The CLI prints ``str(error)`` and exits 1; the traceback only with ``--debug``.
Each error carries ``code``, the protocol status a node answers with when the error ends a
request (``cocaine_core.protocol.Status``; plain numbers here, so this module imports nothing
of cocaine's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs


class CocaineError(Exception):
    """Base of every error cocaine raises on purpose."""

    #: The status a request that ends in this error is answered with.
    code: int = 500


class PluginError(CocaineError):
    """A plugin could not be loaded or misbehaved while registering."""


class DuplicateNameError(PluginError):
    """Two plugins registered the same name for the same kind of type."""


class UnknownTypeError(CocaineError):
    """A manifest or a setting named a type that no installed plugin provides."""

    code = 400


@attrs.frozen
class Problem:
    """One thing wrong with a manifest: where (a key path) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestError(CocaineError):
    """A manifest has one or more problems; all of them are listed at once."""

    code = 400

    def __init__(self, problems: Iterable[Problem], source: str | None = None) -> None:
        self.problems: list[Problem] = list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = f" in {self.source}" if self.source else ""
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} with the manifest{where}:"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


class ProtocolError(CocaineError):
    """A frame or message did not follow the protocol."""

    code = 400


class ServiceError(CocaineError):
    """A request failed with ``code`` and ``message``: raised by clients for an error answer,
    and by the node to answer a request with that error at once."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class AppLoadError(CocaineError):
    """An app's code could not be loaded (bad source, missing handler, a slow or killed load).

    ``code_fault`` says whether the code itself failed (it raised, a handler is missing), as
    opposed to the moment (it took too long, the process was killed): only the code's faults,
    again and again, mark an app broken.
    """

    def __init__(self, message: str, *, code_fault: bool = True) -> None:
        super().__init__(message)
        self.code_fault = code_fault


class StorageError(CocaineError):
    """A storage could not read or write what it was asked to."""


class StorageUnavailable(StorageError):
    """A storage cannot be reached right now (an etcd cluster down or without a quorum):
    nothing was read or written; the same request may succeed once it is back."""

    code = 503


class NodeError(CocaineError):
    """The node could not do what it was asked (bind, deploy, start an app)."""

    code = 400


class NotFoundError(NodeError):
    """What a request named (an app, an event, a method, an upload) does not exist."""

    code = 404


class BusyError(NodeError):
    """The app is busy with another deploy, removal or restart, or not serving yet."""

    code = 503


def join_names(names: Sequence[str]) -> str:
    """Render a list of names for a message: ``'a', 'b'`` or ``(none)``."""
    return ", ".join(f"'{n}'" for n in sorted(names)) if names else "(none)"


class TrustError(CocaineError):
    """A key could not be made, read or used; or a request's signature was refused (401)."""

    code = 401
