"""The cluster key: the secret that makes a node a member of its cluster.

Nodes of one cluster share 32 random bytes. ``cocaine cluster key FILE`` writes a new key
(mode 0600) and ``cocaine node --cluster NAME --cluster-key FILE`` reads it; with a shared
store (etcd) the key may live in the store instead, in namespace ``cluster`` under the
cluster's name (``cocaine cluster key --storage URI --cluster NAME``), readable by whoever
may already write the store, and so run code on every node.

From the key and the cluster's name comes one CurveZMQ key pair (HKDF-SHA256): every node of
the cluster is a Curve server with it on its link endpoint and a Curve client with it on its
links to the others, and a link endpoint lets in only clients with that public key (ZAP). So
a node without the key can neither connect to a member, nor be connected to, nor read what
crosses a link; and the same key under two cluster names makes two clusters that never mix.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from zmq.utils import z85

from cocaine_core.errors import NodeError
from cocaine_core.trust import zap
from cocaine_core.trust.curve import secure_server

if TYPE_CHECKING:
    from cocaine_core.storages import Storage

#: The first word of a cluster key file, naming the format.
MAGIC = "cocaine-cluster-key-v1"
#: Bytes of secret in a cluster key.
KEY_BYTES = 32
#: Where a shared store keeps cluster keys, by cluster name.
NAMESPACE = "cluster"
#: The most bytes a key file may have (it is one short line).
MAX_FILE = 4096

HOW_TO_MAKE = ("make one with: cocaine cluster key FILE (then copy FILE to every node of the "
               "cluster, mode 0600, and pass --cluster-key FILE); with a shared etcd store, "
               "cocaine cluster key --storage URI --cluster NAME puts it in the store instead")


def new_key() -> bytes:
    """A fresh cluster key."""
    return secrets.token_bytes(KEY_BYTES)


def encode(key: bytes) -> bytes:
    """The key as written to a file or a store: one line."""
    return f"{MAGIC} {base64.b64encode(key).decode()}\n".encode()


def decode(data: bytes, where: str) -> bytes:
    """The key in ``data`` (a file's or a store's bytes); NodeError naming ``where``."""
    try:
        magic, _, text = data.decode("ascii").strip().partition(" ")
        key = base64.b64decode(text.strip(), validate=True)
    except (UnicodeDecodeError, binascii.Error, ValueError):
        magic, key = "", b""
    if magic != MAGIC or len(key) != KEY_BYTES:
        raise NodeError(f"{where} is not a cluster key (expected one line '{MAGIC} <base64 of "
                        f"{KEY_BYTES} bytes>'); {HOW_TO_MAKE}")
    return key


def write_key_file(path: Path, *, force: bool = False) -> bytes:
    """Write a new key to ``path`` (mode 0600, never over an existing file unless ``force``,
    and never into anything but a regular file); return it."""
    key = new_key()
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise NodeError(f"cannot write the cluster key to {path}: {exc.strerror}") from None
    if existing is not None and (not force or not stat.S_ISREG(existing.st_mode)):
        what = "exists" if stat.S_ISREG(existing.st_mode) else \
            "exists and is not a regular file (a link, a device, a pipe?)"
        raise NodeError(f"{path} {what}: a cluster key is never written over it by accident "
                        f"(every node using it would be cut off); choose another file"
                        + (", or pass --force" if stat.S_ISREG(existing.st_mode) else ""))
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | \
        (os.O_TRUNC if existing is not None else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise NodeError(f"cannot write the cluster key to {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        if not stat.S_ISREG(os.fstat(out.fileno()).st_mode):
            raise NodeError(f"{path} is not a regular file; choose another file")
        os.fchmod(out.fileno(), 0o600)
        out.write(encode(key))
    return key


def read_key_file(path: Path) -> bytes:
    """The key in ``path``; NodeError if it is missing, not a regular file, not a key,
    readable by others, or owned by another user than this one (or root)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        why = "it is a symbolic link: give the path of the file itself" \
            if exc.errno == errno.ELOOP else exc.strerror
        raise NodeError(f"cannot read the cluster key {path}: {why}; {HOW_TO_MAKE}") from None
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise NodeError(f"the cluster key {path} is not a regular file")
        if status.st_mode & 0o077:
            raise NodeError(f"the cluster key {path} may be read by other users (mode "
                            f"{stat.S_IMODE(status.st_mode):04o}): anyone who reads it joins "
                            f"the cluster; chmod 600 {path}")
        if status.st_uid not in (os.geteuid(), 0):
            raise NodeError(f"the cluster key {path} belongs to another user (uid "
                            f"{status.st_uid}), who could change it; chown it to the user "
                            f"running the node")
        data = file.read(MAX_FILE + 1)
    return decode(data[:MAX_FILE], f"the file {path}")


def stored_key(storage: Storage, cluster: str) -> bytes | None:
    """The cluster's key in ``storage`` (None if it holds none)."""
    try:
        data = storage.get(NAMESPACE, cluster)
    except KeyError:
        return None
    return decode(data, f"the store's key of cluster {cluster!r}")


def store_key(storage: Storage, cluster: str, *, force: bool = False) -> bytes:
    """Put a new key for ``cluster`` in ``storage``; NodeError if one is there, unless
    ``force`` (which cuts off every node using the old one until it restarts)."""
    if not force and stored_key(storage, cluster) is not None:
        raise NodeError(f"the store already holds a key for cluster {cluster!r}; pass --force "
                        f"to replace it (every node of the cluster must then restart)")
    key = new_key()
    storage.put(NAMESPACE, cluster, encode(key))
    return key


def link_keypair(key: bytes, cluster: str) -> tuple[bytes, bytes]:
    """The cluster's Curve key pair (public, secret; Z85) from its ``key`` and name."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"cocaine cluster link v1\0" + cluster.encode()).derive(key)
    scalar = bytearray(derived)
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    secret = z85.encode(bytes(scalar))
    return zmq.curve_public(secret), secret


class LinkSecurity:
    """CurveZMQ for a cluster's sockets: its link endpoint (a server letting in only the
    cluster's public key) and its links to peers (clients of that same key)."""

    def __init__(self, key: bytes, cluster: str) -> None:
        self.public, self.secret = link_keypair(key, cluster)
        self.raw_public = z85.decode(self.public)
        self.domain = f"cocaine-cluster-{id(self):x}"
        self._context: zmq.Context[Any] | None = None
        #: Connections refused at the link endpoint (a key other than the cluster's).
        self.refused = 0

    def secure(self, socket: Any) -> None:
        """Make ``socket`` (not yet bound) the cluster's Curve server on the link endpoint."""
        self._context = socket.context
        zap.register(socket.context, self.domain, self._allows)
        secure_server(socket, (self.public, self.secret), self.domain)

    def _allows(self, key: bytes) -> bool:
        if key == self.raw_public:
            return True
        self.refused += 1
        return False

    def secure_link(self, socket: Any) -> None:
        """Make ``socket`` (not yet connected) a Curve client of the cluster's nodes."""
        socket.curve_serverkey = self.public
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret

    def close(self) -> None:
        """Stop checking clients (the link endpoint is closed)."""
        if self._context is not None:
            zap.unregister(self._context, self.domain)
            self._context = None
