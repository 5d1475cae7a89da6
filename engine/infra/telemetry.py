"""Traces and metrics through the OpenTelemetry API (no SDK in the core: a no-op until one is installed).

One span per message, from receive to durable (`vigil.message`), with
events for classified and durable; attributes say lane, kind, message type,
outcome and LSN, never a patient, a name or an identifier (invariant 7).
Metrics: messages by lane and outcome, the receive-to-ACK latency per lane,
each lane's depth, the read side's lag (records and seconds) when it runs,
and each route's backlog, oldest undelivered age and deliveries by lane.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import ClassVar, Final

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["ATTRIBUTES_ALLOWED", "Telemetry"]

# Every attribute Vigil puts on a span or a measurement; a test checks no other reaches them.
ATTRIBUTES_ALLOWED: Final = frozenset(
    {"vigil.lane", "vigil.kind", "vigil.message_type", "vigil.outcome", "vigil.lsn", "vigil.route"}
)

# Of each route and lane: (route, lane, messages waiting, age of the oldest in s or None, delivered so far).
RouteLane = tuple[str, str, int, float | None, int]


class Telemetry:
    """The node's tracer and instruments, made once."""

    def __init__(
        self,
        lane_depths: Callable[[], Iterable[tuple[str, int]]],
        read_side_lag: Callable[[], tuple[int, float] | None] = lambda: None,
        route_lanes: Callable[[], Iterable[RouteLane]] = lambda: (),
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

        self._route_lanes = route_lanes
        _RouteInstruments.serve(self)

    def _observe_lag_records(self, _options: CallbackOptions) -> Iterable[Observation]:
        lag = self._read_side_lag()
        return [] if lag is None else [Observation(lag[0])]

    def _observe_lag_seconds(self, _options: CallbackOptions) -> Iterable[Observation]:
        lag = self._read_side_lag()
        return [] if lag is None else [Observation(lag[1])]

    def _observe_depths(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(depth, {"vigil.lane": lane}) for lane, depth in self._lane_depths()]


class _RouteInstruments:
    """The route gauges, made once per meter provider, observing every live node's routes.

    Observable instruments of one name are registered once: a second node in
    the same process (the demo, tests) would otherwise be observed through
    the first one's callback only.
    """

    _nodes: ClassVar[weakref.WeakSet[Telemetry]] = weakref.WeakSet()
    _provider: ClassVar[object | None] = None

    @classmethod
    def serve(cls, telemetry: Telemetry) -> None:
        cls._nodes.add(telemetry)
        provider = metrics.get_meter_provider()
        if cls._provider is provider:
            return
        cls._provider = provider
        meter = metrics.get_meter("vigil.routes")
        meter.create_observable_gauge(
            "vigil.route.backlog",
            callbacks=[cls._observe_backlog],
            unit="1",
            description="messages a route has still to deliver, by route and lane",
        )
        meter.create_observable_gauge(
            "vigil.route.backlog_age",
            callbacks=[cls._observe_age],
            unit="s",
            description="age of a route's oldest undelivered message, by route and lane",
        )
        meter.create_observable_counter(
            "vigil.route.delivered",
            callbacks=[cls._observe_delivered],
            unit="1",
            description="messages a route delivered since its node started, by route and lane",
        )

    @classmethod
    def _lanes(cls) -> list[RouteLane]:
        return [lane for node in list(cls._nodes) for lane in node._route_lanes()]

    @classmethod
    def _observe_backlog(cls, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"vigil.route": r, "vigil.lane": lane}) for r, lane, n, _, _ in cls._lanes()]

    @classmethod
    def _observe_age(cls, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(age, {"vigil.route": r, "vigil.lane": lane})
            for r, lane, _, age, _ in cls._lanes()
            if age is not None
        ]

    @classmethod
    def _observe_delivered(cls, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"vigil.route": r, "vigil.lane": lane}) for r, lane, _, _, n in cls._lanes()]
