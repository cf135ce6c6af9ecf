"""The Ed25519 public keys of `local.trusted_keys`: parsed by the settings (a bad key fails at
start-up) and by the local wing (which checks model signatures with them). A leaf: it imports
nothing of the gateway, so the settings can use it without importing the local wing."""

from __future__ import annotations

import base64
import binascii


def load_public_key(text: str) -> object:
    """A trusted key: PEM (`-----BEGIN PUBLIC KEY-----`) or base64 of the raw 32 bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("a trusted key must be an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("a trusted key is PEM or base64 of 32 raw bytes") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)
