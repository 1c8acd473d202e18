"""Ed25519 keys: their files, their fingerprints, and signing a control request.

A key pair is kept as OpenSSH writes it: the private key in ``id_ed25519`` (mode 0600, in a
folder of mode 0700) and the public key in ``id_ed25519.pub`` (``ssh-ed25519 AAAA… comment``),
so an existing ``~/.ssh/id_ed25519`` works too. A key is named by its fingerprint, the one
``ssh-keygen -l`` shows: ``SHA256:`` and the unpadded base64 of the SHA-256 of the key.

A signed request carries ``{"key": fingerprint, "ts": unix time, "nonce": 16 random bytes,
"sig": signature}`` in its policy; the signature covers ``signing_payload``: the method, the
SHA-256 of the body (the method's msgpack arguments), the time and the nonce.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import getpass
import hashlib
import os
import socket
import stat
import struct
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from cocaine_core.errors import TrustError

#: The environment variable naming the key file the CLI and ``Client`` sign with.
KEY_ENV = "COCAINE_KEY"
#: What a signature covers starts with this, so it can never be taken for another message.
DOMAIN = b"cocaine-control-1\0"
#: The random bytes of a nonce.
NONCE_BYTES = 16
#: The longest key file read (bytes): a key is a few hundred.
MAX_KEY_FILE = 64 * 1024
_SSH_TYPE = b"ssh-ed25519"


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/cocaine``, or ``~/.config/cocaine``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cocaine"


def default_key_path() -> Path:
    """The key the CLI and ``Client`` sign with: ``$COCAINE_KEY``, else ``id_ed25519`` in
    ``config_dir()``."""
    given = os.environ.get(KEY_ENV)
    return Path(given).expanduser() if given else config_dir() / "id_ed25519"


class PublicKey:
    """An Ed25519 public key, with the comment its ``.pub`` line carried."""

    __slots__ = ("_key", "comment", "raw")

    def __init__(self, raw: bytes, comment: str = "") -> None:
        if len(raw) != 32:
            raise TrustError("an Ed25519 public key is 32 bytes")
        self.raw = raw
        self.comment = comment
        self._key = Ed25519PublicKey.from_public_bytes(raw)

    @property
    def blob(self) -> bytes:
        """The key in SSH wire form (what its fingerprint hashes)."""
        return _ssh_string(_SSH_TYPE) + _ssh_string(self.raw)

    @property
    def digest(self) -> bytes:
        """The SHA-256 of ``blob``."""
        return hashlib.sha256(self.blob).digest()

    @property
    def fingerprint(self) -> str:
        """``SHA256:…`` as ``ssh-keygen -l`` prints it."""
        return "SHA256:" + base64.b64encode(self.digest).decode().rstrip("=")

    def openssh(self) -> str:
        """The key as one ``.pub`` line: ``ssh-ed25519 AAAA… comment``."""
        line = f"ssh-ed25519 {base64.b64encode(self.blob).decode()}"
        return f"{line} {self.comment}" if self.comment else line

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's over ``message``."""
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.fingerprint})"


def digest_of_fingerprint(fingerprint: str) -> bytes:
    """The SHA-256 a ``SHA256:…`` fingerprint (the prefix may be left out) stands for;
    ``TrustError`` if it is none."""
    text = fingerprint.strip().removeprefix("SHA256:")
    try:
        digest = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 32:
        raise TrustError(f"{fingerprint[:80]!r} is not a key fingerprint: one looks like "
                         f"SHA256:RL0Fh… (cocaine keys list shows them)")
    return digest


def parse_public(text: str, *, source: str = "the key") -> PublicKey:
    """A public key from one ``ssh-ed25519 AAAA… [comment]`` line."""
    fields = text.strip().split(None, 2)
    if len(fields) < 2 or fields[0] != "ssh-ed25519":
        raise TrustError(f"{source} is not an Ed25519 public key: expected one line "
                         f"'ssh-ed25519 AAAA… comment', as in id_ed25519.pub")
    try:
        blob = base64.b64decode(fields[1], validate=True)
        kind, rest = _read_ssh_string(blob)
        raw, rest = _read_ssh_string(rest)
    except (binascii.Error, ValueError):
        raise TrustError(f"{source}: the key's base64 part is damaged") from None
    if kind != _SSH_TYPE or rest or len(raw) != 32:
        raise TrustError(f"{source}: the key's base64 part is not an Ed25519 key")
    return PublicKey(raw, fields[2].strip() if len(fields) > 2 else "")


def read_public(given: str) -> PublicKey:
    """A public key from ``given``: a ``.pub`` file, a private key file (its public half),
    or the key's line itself."""
    if given.lstrip().startswith(("ssh-", "ecdsa-", "sk-")) and not os.path.lexists(given):
        return parse_public(given, source="the key given")
    path = Path(given).expanduser()
    text = _read_key_file(path, "public key")
    if "PRIVATE KEY" in text:
        return Signer.load(path).public
    return parse_public(text.splitlines()[0] if text.strip() else "", source=str(path))


class Signer:
    """A private key that signs control requests."""

    def __init__(self, key: Ed25519PrivateKey, comment: str = "",
                 path: Path | None = None) -> None:
        self.key = key
        self.path = path
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        self.public = PublicKey(raw, comment)

    @property
    def fingerprint(self) -> str:
        """The fingerprint of this key."""
        return self.public.fingerprint

    @classmethod
    def load(cls, path: Path) -> Signer:
        """Read a private key file (OpenSSH or PKCS#8 PEM, unencrypted). It must be readable
        by its owner only, as ssh demands; a clear ``TrustError`` otherwise."""
        text = _read_key_file(path, "private key")
        if "PRIVATE KEY" not in text and text.lstrip().startswith(("ssh-", "ecdsa-", "sk-")):
            raise TrustError(f"{path} is a public key; a key to sign with is the private "
                             f"one, the file without .pub")
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise TrustError(f"the private key {path} may be read by other users (mode "
                             f"{stat.S_IMODE(mode):04o}): run chmod 600 {path}")
        data = text.encode()
        try:
            if b"OPENSSH PRIVATE KEY" in data:
                key: Any = serialization.load_ssh_private_key(data, password=None)
            else:
                key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise TrustError(f"the private key {path} is protected by a passphrase; cocaine "
                             f"signs without asking for one: make a key of its own with "
                             f"cocaine keys generate") from None
        except (ValueError, UnsupportedAlgorithm):
            raise TrustError(f"{path} is not a private key cocaine can read (an OpenSSH or "
                             f"PEM Ed25519 key)") from None
        if not isinstance(key, Ed25519PrivateKey):
            kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey")
            raise TrustError(f"{path} is a key of type {kind}; "
                             f"cocaine signs with Ed25519 keys (cocaine keys generate, or "
                             f"ssh-keygen -t ed25519)")
        comment = ""
        with contextlib.suppress(OSError, IndexError):
            pub = Path(f"{path}.pub").read_text(errors="replace").split(None, 2)
            comment = pub[2].strip() if len(pub) > 2 else ""
        return cls(key, comment, path)

    def sign(self, method: str, body: bytes) -> dict[str, Any]:
        """The ``auth`` map of a request calling ``method`` with ``body``."""
        ts = time.time()
        nonce = os.urandom(NONCE_BYTES)
        return {"key": self.fingerprint, "ts": ts, "nonce": nonce,
                "sig": self.key.sign(signing_payload(method, body, ts, nonce))}


def resolve_signer(key: Signer | str | Path | bool | None) -> Signer | None:
    """The key a client signs with: ``key`` itself, the key file it names, none for
    ``False``; for None, the default key (``default_key_path``) if that file exists."""
    if key is False:
        return None
    if isinstance(key, Signer):
        return key
    if key is None or key is True:
        path = default_key_path()  # one this user cannot even see is not theirs: unsigned
        return Signer.load(path) if os.path.lexists(path) else None
    return Signer.load(Path(key).expanduser())


def signing_payload(method: str, body: bytes, ts: float, nonce: bytes, *,
                    digest: bytes | None = None) -> bytes:
    """What a control request's signature covers (``digest``: the body's SHA-256, if the
    caller has it already)."""
    return (DOMAIN + method.encode("utf-8", "surrogatepass") + b"\0"
            + (digest or hashlib.sha256(body).digest()) + struct.pack(">d", ts) + nonce)


def generate(path: Path, *, comment: str | None = None, force: bool = False) -> Signer:
    """Make a new key pair at ``path`` (private, mode 0600) and ``path.pub``; its folder is
    made with mode 0700. An existing key is kept unless ``force``."""
    if path.exists() and not force:
        raise TrustError(f"a key already exists at {path}; keep it, or replace it with "
                         f"--force (requests signed with the old key are then refused)")
    comment = _default_comment() if comment is None else comment
    signer = Signer(Ed25519PrivateKey.generate(), comment, path)
    private = signer.key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(path, private, 0o600, replace=force)
        _write(Path(f"{path}.pub"), (signer.public.openssh() + "\n").encode(), 0o644)
    except FileExistsError:
        raise TrustError(f"a key already exists at {path} (made just now by another "
                         f"process); keep it, or replace it with --force") from None
    except OSError as exc:
        raise TrustError(f"cannot write the key {path}: {exc.strerror}; choose another place "
                         f"with --key") from None
    return signer


def load_or_create(path: Path) -> tuple[Signer, bool]:
    """The key at ``path``, made first if there is none; and whether it was made now."""
    if not path.exists():
        try:
            return generate(path), True
        except TrustError:
            if not path.exists():
                raise  # else another process made it meanwhile: use theirs
    return Signer.load(path), False


def _write(path: Path, data: bytes, mode: int, *, replace: bool = True) -> None:
    """Write ``data`` to a new file at ``path`` with ``mode``, replacing any old one
    atomically (or, without ``replace``, ``FileExistsError`` if there is one); the file
    never exists with looser permissions."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
            os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read_key_file(path: Path, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise TrustError(f"no {what} at {path}; make one with cocaine keys generate") from None
    except OSError as exc:
        raise TrustError(f"cannot read the {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise TrustError(f"{path} is over {MAX_KEY_FILE} bytes: it is no {what}")
    return data.decode("utf-8", "replace")


def _default_comment() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_ssh_string(data: bytes) -> tuple[bytes, bytes]:
    if len(data) < 4:
        raise ValueError("short")
    (size,) = struct.unpack(">I", data[:4])
    if len(data) < 4 + size:
        raise ValueError("short")
    return data[4:4 + size], data[4 + size:]
