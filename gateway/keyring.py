"""API keys, held only as sha256 digests and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from .settings import ServerSettings


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """The accepted client keys and the admin key, held only as digests."""

    def __init__(self, settings: ServerSettings) -> None:
        digests = [_digest(k.get_secret_value()) for k in settings.api_keys]
        if settings.api_keys_file is not None:
            digests += self._read_file(settings.api_keys_file)
        self.client_digests = digests
        self.admin_digest = (
            _digest(settings.admin_key.get_secret_value()) if settings.admin_key else None
        )

    @staticmethod
    def _read_file(path: Path) -> list[bytes]:
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(bytes.fromhex(line))
        return out

    @property
    def enforced(self) -> bool:
        return bool(self.client_digests)

    def is_client(self, key: str | None) -> bool:
        if key is None:
            return False
        d = _digest(key)
        # Compare against every digest, no early exit: timing says nothing about which matched.
        found = False
        for known in self.client_digests:
            found |= hmac.compare_digest(d, known)
        return found

    def is_admin(self, key: str | None) -> bool:
        if key is None or self.admin_digest is None:
            return False
        return hmac.compare_digest(_digest(key), self.admin_digest)
