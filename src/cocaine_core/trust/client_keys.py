"""A client's keys: the Ed25519 key that signs its control requests, and CurveZMQ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cocaine_core.protocol import CONTROL_APP
from cocaine_core.trust.curve import secure_client
from cocaine_core.trust.keys import Signer, resolve_signer


class ClientKeys:
    """A client's keys: the Ed25519 key that signs its control requests (loaded at the
    first one, or at once for CurveZMQ, whose client key derives from it), and CurveZMQ on
    its socket when a server key is given. A key file that cannot be used fails the first
    request that needs it, never a call to an app, which needs none."""

    def __init__(self, key: Signer | str | Path | bool | None,
                 server_key: str | bytes | None) -> None:
        self.given = key
        self.server_key = server_key
        self._signer: Signer | None = None
        self._resolved = False

    def signer(self) -> Signer | None:
        """The signing key (None: requests go unsigned; the node says what to do)."""
        if not self._resolved:
            self._signer = resolve_signer(self.given)
            self._resolved = True
        return self._signer

    def control(self, app: str) -> Signer | None:
        """The key that signs a request to ``app``: only the control service's are signed."""
        return self.signer() if app == CONTROL_APP else None

    def secure(self, socket: Any) -> None:
        """Before the socket connects: CurveZMQ if the node's public key was given."""
        if self.server_key:
            secure_client(socket, self.server_key, self.signer())
