"""CurveZMQ: encrypted, authenticated transport between clients and a node run with --curve.

A client needs the node's Curve public key (Z85, 40 characters: ``cocaine info`` and the
node's log show it). Its own Curve key pair is derived from its Ed25519 signing key (as
libsodium's ``crypto_sign_ed25519_sk_to_curve25519`` does), so one key file is a person's whole
identity and ``--client-keys`` can list ``ssh-ed25519`` keys; a client without a key gets a
fresh key pair per socket.

The node's side: ``CurveServer`` holds its key pair (in storage, namespace ``curve``, made at
the first start with --curve; the secret is never logged) and the ``--client-keys`` list,
enforced through ZAP (``trust/zap.py``); ``secure_server`` makes any socket a CurveZMQ server
(the node's endpoint; the cluster's sockets later).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
from cryptography.hazmat.primitives import serialization
from zmq.utils import z85

from cocaine_core.errors import NodeError, ServiceError, TrustError
from cocaine_core.protocol import Status
from cocaine_core.trust import zap
from cocaine_core.trust.keys import parse_public

if TYPE_CHECKING:
    from cocaine_core.storages import Storage
    from cocaine_core.trust.keys import Signer

log = logging.getLogger("cocaine.curve")

#: Characters in a Z85-encoded Curve key.
Z85_KEY_LENGTH = 40


def check_server_key(server_key: str | bytes) -> bytes:
    """The node's public key as ZeroMQ takes it (Z85 bytes); a 400 naming the problem."""
    key = server_key.encode("ascii", "replace") if isinstance(server_key, str) else server_key
    key = key.strip()
    try:
        ok = len(key) == Z85_KEY_LENGTH and len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ServiceError(Status.BAD_REQUEST, f"the server key must be the node's Curve "
                                               f"public key: {Z85_KEY_LENGTH} Z85 characters "
                                               f"as cocaine info shows it; got "
                                               f"{server_key!r:.60}")
    return key


def curve_keypair(signer: Signer | None) -> tuple[bytes, bytes]:
    """A Curve key pair (public, secret; Z85) derived from ``signer``'s Ed25519 key, or a
    fresh one without a key."""
    if signer is None:
        return zmq.curve_keypair()
    seed = signer.key.private_bytes(serialization.Encoding.Raw,
                                    serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    scalar = bytearray(hashlib.sha512(seed).digest()[:32])
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    secret = z85.encode(bytes(scalar))
    return zmq.curve_public(secret), secret


def secure_client(socket: Any, server_key: str | bytes, signer: Signer | None) -> None:
    """Make ``socket`` (not yet connected) a CurveZMQ client of the node whose public key is
    ``server_key``."""
    if not zmq.has("curve"):
        raise ServiceError(Status.BAD_REQUEST, "this libzmq was built without CurveZMQ: "
                                               "install pyzmq's wheel, which has it")
    key = check_server_key(server_key)
    public, secret = curve_keypair(signer)
    socket.curve_serverkey = key
    socket.curve_publickey = public
    socket.curve_secretkey = secret


# -- the node's side ------------------------------------------------------------------------

#: Where a node keeps its Curve key pair: shared by the nodes that share a storage.
NAMESPACE, SERVER_KEY = "curve", "server"
#: The most bytes and lines a --client-keys file may have.
MAX_CLIENT_KEYS_FILE, MAX_CLIENT_KEYS = 4 * 2**20, 100_000
_P = 2**255 - 19


def ed25519_to_x25519(raw: bytes) -> bytes:
    """The X25519 public key (32 bytes) of an Ed25519 public key: the Edwards point's y gives
    the Montgomery u = (1 + y) / (1 - y) mod 2^255 - 19 (libsodium's ``pk_to_curve25519``)."""
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _P or y == 1:
        raise ValueError("not an Ed25519 public key")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def secure_server(socket: Any, keypair: tuple[bytes, bytes], zap_domain: str = "") -> None:
    """Make ``socket`` (not yet bound) a CurveZMQ server with ``keypair`` (public, secret;
    Z85); with ``zap_domain``, the ZAP policy registered for it decides who may connect.
    The node's endpoint uses it, and the cluster's sockets will."""
    if not zmq.has("curve"):
        raise NodeError("this libzmq was built without CurveZMQ, which --curve needs: "
                        "install pyzmq's wheel, which has it")
    socket.curve_server = 1
    socket.curve_publickey = keypair[0]
    socket.curve_secretkey = keypair[1]
    if zap_domain:
        socket.zap_domain = zap_domain.encode()


def server_keypair(storage: Storage | None) -> tuple[bytes, bool]:
    """The node's Curve secret key (Z85) from ``storage``, made and stored if there is none
    (True: made now); without storage, a fresh one each time."""
    if storage is None:
        return zmq.curve_keypair()[1], True
    secret = _stored_secret(storage)
    if secret is not None:
        return secret, False
    fresh = zmq.curve_keypair()
    record = {"public": fresh[0].decode(), "secret": fresh[1].decode(),
              "created": round(time.time(), 3)}
    storage.put(NAMESPACE, SERVER_KEY, json.dumps(record).encode())
    stored = _stored_secret(storage)  # two nodes starting at once: the last write holds
    return (stored or fresh[1]), stored == fresh[1]


def server_public_key(storage: Storage) -> str | None:
    """The Curve public key (Z85) of the nodes using ``storage``, None before one ran with
    --curve (for ``cocaine keys``)."""
    secret = _stored_secret(storage)
    return None if secret is None else zmq.curve_public(secret).decode()


def _stored_secret(storage: Storage) -> bytes | None:
    try:
        data = storage.get(NAMESPACE, SERVER_KEY)
    except KeyError:
        return None
    where = f"the node's Curve key in {storage.uri} ({NAMESPACE}/{SERVER_KEY})"
    try:
        record = json.loads(data)
        secret = str(record["secret"]).encode("ascii")
        ok = len(secret) == Z85_KEY_LENGTH and len(z85.decode(secret)) == 32 and \
            zmq.curve_public(secret).decode() == record["public"]
    except (ValueError, KeyError, TypeError, UnicodeError, zmq.ZMQError, RecursionError):
        ok = False
    if not ok:
        raise NodeError(f"{where} is damaged; remove it to make a new one (clients then need "
                        f"the new key from cocaine info)")
    return secret


def read_client_keys(path: Path) -> frozenset[bytes]:
    """The Curve public keys (32 raw bytes each) a ``--client-keys`` file lists: per line an
    ``ssh-ed25519 AAAA… comment`` key or a 40-character Z85 Curve key; ``#`` comments and
    blank lines are skipped. NodeError naming the file and line of a bad one."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CLIENT_KEYS_FILE + 1)
    except OSError as exc:
        raise NodeError(f"cannot read --client-keys {path}: {exc.strerror}") from None
    if len(data) > MAX_CLIENT_KEYS_FILE:
        raise NodeError(f"--client-keys {path} is larger than {MAX_CLIENT_KEYS_FILE} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise NodeError(f"--client-keys {path} is not UTF-8 text") from None
    keys: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keys.add(_client_key(line, f"--client-keys {path}, line {number}"))
        if len(keys) > MAX_CLIENT_KEYS:
            raise NodeError(f"--client-keys {path} lists more than {MAX_CLIENT_KEYS} keys")
    return frozenset(keys)


def _client_key(line: str, where: str) -> bytes:
    if line.startswith("ssh-"):
        try:
            return ed25519_to_x25519(parse_public(line, source=where).raw)
        except (TrustError, ValueError) as exc:
            raise NodeError(str(exc)) from None
    word = line.split()[0]
    if len(word) == Z85_KEY_LENGTH:
        try:
            return z85.decode(word.encode("ascii"))
        except (ValueError, KeyError, UnicodeError):
            pass
    raise NodeError(f"{where}: expected an 'ssh-ed25519 AAAA… comment' line (a .pub file's) "
                    f"or a {Z85_KEY_LENGTH}-character Z85 Curve public key; got "
                    f"{line!r:.60}")


class CurveServer:
    """A node's CurveZMQ: its key pair, and with ``--client-keys`` the clients it lets in."""

    def __init__(self, secret: bytes, client_keys: Path | None = None, *,
                 made: bool = False, stored: bool = True) -> None:
        self.secret = secret
        self.public = zmq.curve_public(secret)
        #: True when the key pair was made at this start; whether it is kept in storage.
        self.made, self.stored = made, stored
        self.client_keys = client_keys
        self.allowed = read_client_keys(client_keys) if client_keys is not None else None
        self.domain = f"cocaine-{id(self):x}" if client_keys is not None else ""
        self._context: zmq.Context[Any] | None = None

    @classmethod
    def load(cls, storage: Storage | None, client_keys: Path | None = None) -> CurveServer:
        """The node's key pair from ``storage`` (made at the first start; without storage a
        fresh one), with the clients ``client_keys`` lists."""
        secret, made = server_keypair(storage)
        return cls(secret, client_keys, made=made, stored=storage is not None)

    def secure(self, socket: Any) -> None:
        """Make ``socket`` (not yet bound) this node's CurveZMQ server."""
        if self.allowed is not None:
            self._context = socket.context
            zap.register(socket.context, self.domain, self._allows)
        secure_server(socket, (self.public, self.secret), self.domain)

    def _allows(self, key: bytes) -> bool:
        allowed = self.allowed
        return allowed is None or key in allowed

    def reload(self) -> None:
        """Read ``--client-keys`` again (SIGHUP); a bad file keeps the old list, logged."""
        if self.client_keys is None:
            return
        try:
            self.allowed = read_client_keys(self.client_keys)
        except NodeError as exc:
            log.error("kept the previous client keys: %s", exc)
            return
        log.info("--client-keys %s read again: %d key(s)", self.client_keys, len(self.allowed))

    def close(self) -> None:
        """Stop checking clients (the node's socket is closed)."""
        if self._context is not None:
            zap.unregister(self._context, self.domain)
            self._context = None

    def info(self) -> dict[str, Any]:
        """For ``Node.info``: the public key, and how many client keys are listed."""
        return {"curve-key": self.public.decode(),
                "client-keys": None if self.allowed is None else len(self.allowed)}


def beyond_loopback(endpoint: str) -> bool:
    """Whether a node listening on ``endpoint`` can be reached from other machines (any
    transport but ipc/inproc whose host is not 127.x, ::1, localhost or lo)."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc") or not rest:
        return False
    host = rest.rsplit(":", 1)[0].strip("[]").lower()
    if host in ("localhost", "lo"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # *, an interface or a host name


def announce(endpoint: str, curve: CurveServer | None, *, how: str = "--curve") -> None:
    """Log how clients reach a node on ``endpoint``: with CurveZMQ, the public key they pass
    (never the secret); without it and reachable from other machines, the risk."""
    if curve is not None:
        listed = "" if curve.allowed is None else \
            f"; only the {len(curve.allowed)} client key(s) in {curve.client_keys} may connect"
        made = "" if not curve.made else " (a new key pair, stored)" if curve.stored else \
            " (a key pair for this run only)"
        log.info("CurveZMQ on%s: clients pass --server-key %s (COCAINE_SERVER_KEY)%s", made,
                 curve.public.decode(), listed)
        if curve.allowed is not None and not curve.allowed:
            log.warning("--client-keys %s lists no key: no client can connect to this node "
                        "(add the .pub line of each client that may)", curve.client_keys)
    elif beyond_loopback(endpoint):
        log.warning("listening on %s, beyond this machine, without CurveZMQ: requests, answers "
                    "and uploaded code cross the network in plaintext, and anyone who can "
                    "reach it may call its apps (control is signed, but not secret); run with "
                    "%s (clients then pass --server-key), or listen on 127.0.0.1 or ipc://",
                    endpoint, how)
