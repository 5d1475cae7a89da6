"""The node: its parts, each handed what it needs, and `engine.node.wiring`, the one place that wires them."""

from engine.core.outcome import IngestResult
from engine.node.wiring import Node

__all__ = ["IngestResult", "Node"]
