"""The node: its parts, each handed what it needs, and `engine.node.wiring`, the one place that wires them."""

from engine.core.outcome import IngestResult
from engine.node.quarantine_desk import (
    Ingest,
    QuarantineAction,
    QuarantineActionError,
    QuarantineDesk,
    refusal_of,
)
from engine.node.quarantine_requests import audit_detail, permission_for
from engine.node.wiring import Node

__all__ = [
    "Ingest",
    "IngestResult",
    "Node",
    "QuarantineAction",
    "QuarantineActionError",
    "QuarantineDesk",
    "audit_detail",
    "permission_for",
    "refusal_of",
]
