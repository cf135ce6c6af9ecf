"""The long-lived objects one gateway instance owns, built once by create_app."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .auth import KeyRing
from .backends.local import LocalBackend
from .costs import Prices
from .limits import Limiter
from .metrics import Metrics
from .routing.store import PolicyStore
from .service import Dispatcher
from .settings import Settings

if TYPE_CHECKING:
    from .service import Outcome


@dataclass
class Services:
    settings: Settings
    local: LocalBackend
    dispatcher: Dispatcher
    policies: PolicyStore
    metrics: Metrics
    prices: Prices
    keyring: KeyRing
    limiter: Limiter
    started_at: float = field(default_factory=time.time)
    draining: bool = False

    def price_model(self, outcome: Outcome) -> str | None:
        """The litellm model whose price an answer is counted at (what the cloud would cost)."""
        models = {m.name: m.model for m in self.settings.cloud.models}
        target = outcome.decision.target
        if target in models:
            return models[target]
        return next(iter(models.values()), None)
