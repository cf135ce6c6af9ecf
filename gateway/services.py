"""The long-lived objects one gateway instance owns, built once by create_app."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .backends.local import LocalBackend
from .service import Dispatcher
from .settings import Settings


@dataclass
class Services:
    settings: Settings
    local: LocalBackend
    dispatcher: Dispatcher
    started_at: float = field(default_factory=time.time)
