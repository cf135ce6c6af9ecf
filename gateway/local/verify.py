"""Is this the file we were promised: its SHA-256, and an Ed25519 signature over that digest.

The signature is detached and covers the file's 32-byte SHA-256 digest, not the file itself:
Ed25519 has no streaming form, and holding a whole GGUF in memory to verify it is exactly what
an edge box cannot afford. Sign with, for example,
`openssl dgst -sha256 -binary m.gguf | openssl pkeyutl -sign -inkey key.pem -rawin | base64`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

_CHUNK = 1 << 20


class NotARegularFile(ValueError):
    """A FIFO, a device, a directory: nothing a model is read from, and some never end."""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read now. Blocking: run it off the event loop.

    Never cached: size and mtime do not prove a file unchanged (an in-place edit can keep
    both, `touch -r` restores mtime), and a digest reported for a load must be of what that
    load read.

    Only a regular file is read: a FIFO would block the thread until a writer came, and
    /dev/zero never ends. Checked before opening (a device is never opened) and again on the
    open descriptor (O_NONBLOCK, so a FIFO put in its place meanwhile cannot block the open).
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise NotARegularFile(f"{path} is not a regular file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(f"{path} is not a regular file")
        digest = hashlib.sha256()
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


class SignatureError(Exception):
    """The signature is missing, malformed, or made by no trusted key."""


def verify_signature(sha256_hex: str, signature_b64: str, trusted: list[object]) -> None:
    """Raise SignatureError unless one trusted key (trusted_keys.load_public_key) signed the
    digest."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the signature is not valid base64") from None
    if len(signature) != 64:
        raise SignatureError("an Ed25519 signature is 64 bytes")
    message = bytes.fromhex(sha256_hex)
    for key in trusted:
        assert isinstance(key, Ed25519PublicKey)
        try:
            key.verify(signature, message)
            return
        except InvalidSignature:
            continue
    raise SignatureError("the signature matches no key in local.trusted_keys")
