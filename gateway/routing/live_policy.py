"""The policy in force: loaded at start, swapped atomically on reload, kept when an edit breaks."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from .policy_file import PolicyError, load_policy
from .policy_models import Policy

log = logging.getLogger(__name__)


class PolicyStore:
    def __init__(
        self,
        path: Path,
        *,
        cloud_names: list[str],
        on_reload: Callable[[str], None] | None = None,
        local_models: list[str] | None = None,
    ) -> None:
        self.path = path
        self.cloud_names = cloud_names
        self.local_models = local_models  # names a rule's `model:` may pick
        self._on_reload = on_reload
        self._digest = ""
        self.current: Policy = self._read()  # a broken policy at start-up stops start-up
        self.last_error: str | None = None

    def _read(self) -> Policy:
        raw = self.path.read_bytes() if self.path.is_file() else b""
        policy = load_policy(
            self.path, cloud_names=self.cloud_names, local_models=self.local_models
        )
        self._digest = _digest(raw, policy)
        return policy

    def reload(self) -> Policy:
        """Validate the file and swap it in; on error keep the last good policy and raise."""
        try:
            policy = self._read()
        except PolicyError as exc:
            self.last_error = str(exc)
            log.error(
                "policy reload failed; keeping the last good policy",
                extra={"file": str(self.path), "error": str(exc)},
            )
            if self._on_reload:
                self._on_reload("failure")
            raise
        self.current = policy  # one reference assignment: requests see old or new, never a mix
        self.last_error = None
        log.info("policy reloaded", extra={"file": str(self.path), "rules": len(policy.rules)})
        if self._on_reload:
            self._on_reload("success")
        return policy

    def _file_digest(self) -> str | None:
        """The policy file's digest, with its weights file's: replacing either reloads."""
        try:
            return _digest(self.path.read_bytes(), self.current)
        except OSError:
            return None  # mid-rename or deleted: keep serving the last good policy

    def changed(self) -> bool:
        digest = self._file_digest()
        return digest is not None and digest != self._digest

    async def watch(self, interval_s: float) -> None:
        """Poll the file (portable, works on bind mounts and ConfigMap symlink swaps).

        A change is loaded once the file has stayed the same for one whole interval: an
        editor or `cp` caught mid-write can leave a truncated file that still parses (the
        first rules of six, say), and that must never become the policy in force.
        """
        settling: str | None = None
        while True:
            await asyncio.sleep(interval_s)
            digest = self._file_digest()
            if digest is None or digest == self._digest:
                settling = None
                continue
            if digest != settling:
                settling = digest
                continue
            settling = None
            try:
                self.reload()
            except PolicyError:
                # Remember the broken content so the error is logged once, not every poll.
                self._digest = digest


def _digest(raw: bytes, policy: Policy) -> str:
    h = hashlib.sha256(raw)
    weights = policy.scorer.path if policy.scorer is not None else None
    if weights is not None:
        try:
            h.update(weights.read_bytes())
        except OSError:
            h.update(b"\0missing")  # gone or mid-rename: a change, caught on the next read
    return h.hexdigest()
