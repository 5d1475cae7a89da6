"""Structured logging: configured once at start, to stderr, with PHI redacted.

Invariant 7: logs carry no names, birth dates or identifiers in clear. The
redaction processor replaces the value of every key that can hold PHI, so a
careless `log.info(..., patient=key)` still writes nothing identifying.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog
from opentelemetry import trace

__all__ = ["PHI_KEYS", "add_trace_context", "configure_logging", "redact_phi"]

PHI_KEYS = frozenset(
    {
        "patient",
        "patients",
        "other_patients",
        "name",
        "family",
        "given",
        "birth_date",
        "address",
        "raw",
        "identifier",
        "mrn",
        "value",
        "text",
    }
)


def redact_phi(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: blank out every value whose key may hold PHI."""
    for key in PHI_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def add_trace_context(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: the current span's trace and span ids, so a log line joins its trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


class _Stderr:
    """Whatever `sys.stderr` is at the time of writing (a test runner may swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", *, json: bool = False) -> None:
    """Configure structlog for the process: stderr, ISO UTC timestamps, PHI redacted."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_trace_context,
            redact_phi,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _Stderr())),
        # Not cached: a logger cached at one level would keep it even after a later
        # configuration (tests run several CLIs in one process); logs here are rare.
        cache_logger_on_first_use=False,
    )
