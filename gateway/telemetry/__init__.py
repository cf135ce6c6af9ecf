"""The telemetry outbox: routing records kept on the box and shipped when the uplink is up."""

from .outbox import Outbox
from .record import routing_record

__all__ = ["Outbox", "routing_record"]
