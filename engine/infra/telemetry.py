"""Traces and metrics through the OpenTelemetry API (no SDK in the core: a no-op until one is installed).

One span per message, from receive to durable (`vigil.message`), with
events for classified and durable; attributes say lane, kind, message type,
outcome and LSN, never a patient, a name or an identifier (invariant 7).
Metrics: messages by lane and outcome, the receive-to-ACK latency per lane,
each lane's depth, and the read side's lag (records and seconds) when it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["ATTRIBUTES_ALLOWED", "Telemetry"]

# Every attribute Vigil puts on a span or a measurement; a test checks no other reaches them.
ATTRIBUTES_ALLOWED: Final = frozenset({"vigil.lane", "vigil.kind", "vigil.message_type", "vigil.outcome", "vigil.lsn"})


class Telemetry:
    """The node's tracer and instruments, made once."""

    def __init__(
        self,
        lane_depths: Callable[[], Iterable[tuple[str, int]]],
        read_side_lag: Callable[[], tuple[int, float] | None] = lambda: None,
    ) -> None:
        self.tracer = trace.get_tracer("vigil.node")
        # Without an SDK installed before the node starts (engine.infra.otel_export does it
        # first), a span is a no-op that still costs a tenth of a message's CPU: none then.
        self.tracing = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        meter = metrics.get_meter("vigil.node")
        self.messages = meter.create_counter(
            "vigil.messages", unit="1", description="messages answered, by lane and outcome"
        )
        self.ack_latency = meter.create_histogram(
            "vigil.ack.latency", unit="ms", description="receive to answer (durable, or refused)"
        )
        self.invalid_text = meter.create_counter(
            "vigil.messages.invalid_text",
            unit="1",
            description="messages whose bytes not valid in their (undeclared) character set were replaced",
        )
        self.reused_control_ids = meter.create_counter(
            "vigil.control_ids.reused",
            unit="1",
            description="messages stored under a control id the log held with other content",
        )
        self._lane_depths = lane_depths
        meter.create_observable_gauge(
            "vigil.lane.depth", callbacks=[self._observe_depths], unit="1", description="items waiting in each lane"
        )

        self._read_side_lag = read_side_lag
        meter.create_observable_gauge(
            "vigil.projection.lag",
            callbacks=[self._observe_lag_records],
            unit="1",
            description="log records not yet in the read side",
        )
        meter.create_observable_gauge(
            "vigil.projection.lag_time",
            callbacks=[self._observe_lag_seconds],
            unit="s",
            description="age of the oldest record not yet in the read side",
        )

    def _observe_lag_records(self, _options: CallbackOptions) -> Iterable[Observation]:
        lag = self._read_side_lag()
        return [] if lag is None else [Observation(lag[0])]

    def _observe_lag_seconds(self, _options: CallbackOptions) -> Iterable[Observation]:
        lag = self._read_side_lag()
        return [] if lag is None else [Observation(lag[1])]

    def _observe_depths(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(depth, {"vigil.lane": lane}) for lane, depth in self._lane_depths()]
