"""What load balancers, Kubernetes and Prometheus ask, with no token: no PHI is in any of it.

- `GET /healthz`: 200 while the process serves HTTP (liveness: restart me if not).
- `GET /readyz`: 200 when the log is open and every part of the node runs;
  503 with the reason otherwise (starting, a part restarting, stopping).
- `GET /metrics`: Prometheus's text format, from the node's own account of
  itself (`vigil status`'s report): lanes, the log, routes, the read side,
  the search index, quarantine, supervision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Final, final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["Probes", "Readiness", "Report", "metric_families"]

Report = Callable[[], Awaitable[Mapping[str, Any]]]
Readiness = Callable[[], str | None]  # None when ready, else why not
Family = GaugeMetricFamily | CounterMetricFamily

_LANE_COUNTERS: Final = {"admitted": "admitted to the lane", "done": "done", "failed": "failed"}
_LANE_LATENCIES: Final = ("wait_p50_us", "wait_p99_us", "total_p50_us", "total_p99_us", "total_p999_us")
_STATES: Final = ("starting", "running", "restarting", "stopped")


@final
class Probes:
    def __init__(self, ready: Readiness, report: Report) -> None:
        self._ready = ready
        self._report = report

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
        ]

    async def _healthz(self, _request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def _readyz(self, _request: Request) -> Response:
        why = self._ready()
        if why is None:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"not ready: {why}\n", status_code=503, headers={"Retry-After": "1"})

    async def _metrics(self, _request: Request) -> Response:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(metric_families(await self._report())))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@final
class _Snapshot(Collector):
    """The families of one report: a scrape reads the node once, as `vigil status` does."""

    def __init__(self, families: list[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Family]:
        yield from self._families


def metric_families(report: Mapping[str, Any]) -> list[Family]:
    """The report's figures as Prometheus metric families (names `vigil_*`, units in the name)."""
    families: list[Family] = [
        *_lanes(report),
        *_log(report),
        *_routes(report),
        *_supervision(report),
        *_senders(report),
        *_alerts(report),
    ]
    families.append(_gauge("vigil_mllp_connections", "MLLP connections open now", report.get("mllp_connections")))
    families.append(_gauge("vigil_uptime_seconds", "seconds since the node started", report.get("uptime_s")))
    families.append(_gauge("vigil_in_flight_messages", "messages received, not yet answered", report.get("in_flight")))
    families.append(
        _gauge("vigil_quarantine_open", "quarantined messages not yet resolved", report.get("quarantine_open"))
    )
    families.append(
        _counter(
            "vigil_invalid_text_messages",
            "messages whose bytes were not valid in their character set (replaced)",
            report.get("invalid_text_messages"),
        )
    )
    search = report.get("search")
    if isinstance(search, Mapping):
        families.append(_gauge("vigil_search_indexed_lsn", "the message search index's last LSN", search["indexed_to"]))
    projections = report.get("projections")
    if isinstance(projections, Mapping) and "lag_records" in projections:
        families.append(
            _gauge("vigil_projection_lag_records", "log records not yet in the read side", projections["lag_records"])
        )
    return [f for f in families if f.samples]


def _gauge(name: str, documentation: str, value: object) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    if isinstance(value, int | float):
        family.add_metric([], float(value))
    return family


def _counter(name: str, documentation: str, value: object) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation)
    if isinstance(value, int | float):
        family.add_metric([], float(value))
    return family


def _lanes(report: Mapping[str, Any]) -> list[Family]:
    lanes = report.get("lanes")
    if not isinstance(lanes, list):
        return []
    depth = GaugeMetricFamily("vigil_lane_depth", "items waiting in the lane", labels=["lane"])
    capacity = GaugeMetricFamily("vigil_lane_capacity", "the lane's bound", labels=["lane"])
    counters = {
        key: CounterMetricFamily(f"vigil_lane_{key}", f"messages {what}", labels=["lane"])
        for key, what in _LANE_COUNTERS.items()
    }
    latency = GaugeMetricFamily(
        "vigil_lane_latency_seconds",
        "wait in the lane and receive to done, by quantile",
        labels=["lane", "stage", "quantile"],
    )
    for lane in lanes:
        name = str(lane["lane"])
        depth.add_metric([name], lane["depth"])
        capacity.add_metric([name], lane["capacity"])
        for key, family in counters.items():
            family.add_metric([name], lane[key])
        for key in _LANE_LATENCIES:
            stage, _, quantile = key.removesuffix("_us").partition("_p")
            latency.add_metric([name, stage, str(int(quantile) / 10 ** len(quantile))], lane[key] / 1e6)
    return [depth, capacity, *counters.values(), latency]


def _log(report: Mapping[str, Any]) -> list[Family]:
    wal = report.get("wal")
    if not isinstance(wal, Mapping):
        return []
    return [
        _gauge("vigil_wal_last_lsn", "the log's last LSN", wal.get("last_lsn")),
        _gauge("vigil_wal_segments", "segment files of the log", wal.get("segments")),
        _counter("vigil_wal_appended_records", "records appended since start", wal.get("appended_records")),
        _counter(
            "vigil_wal_duplicate_records", "duplicates answered with the stored LSN", wal.get("duplicate_records")
        ),
        _counter(
            "vigil_control_ids_reused",
            "messages stored under a control id the log held with other content",
            wal.get("reused_control_ids"),
        ),
        _counter("vigil_wal_disk_full_refusals", "appends refused for a full disk", wal.get("disk_full_refusals")),
    ]


def _routes(report: Mapping[str, Any]) -> list[Family]:
    routes = report.get("routes")
    if not isinstance(routes, list):
        return []
    backlog = GaugeMetricFamily("vigil_route_backlog", "messages not yet delivered", labels=["route", "lane"])
    oldest = GaugeMetricFamily(
        "vigil_route_oldest_undelivered_seconds", "age of the oldest undelivered message", labels=["route", "lane"]
    )
    delivered = CounterMetricFamily("vigil_route_delivered", "messages delivered", labels=["route", "lane"])
    for route in routes:
        for lane in route.get("lanes", ()):
            labels = [str(route["name"]), str(lane["lane"])]
            backlog.add_metric(labels, lane["backlog"])
            delivered.add_metric(labels, lane["delivered"])
            if lane.get("oldest_age_s") is not None:
                oldest.add_metric(labels, lane["oldest_age_s"])
    return [backlog, oldest, delivered]


def _senders(report: Mapping[str, Any]) -> list[Family]:
    """Each sending system (MSH-3^MSH-4): when its last message was logged, and how many (as far as indexed).

    A feed gone quiet shows as a last-seen time that stops moving: `time() - vigil_sender_last_seen_...`.
    """
    seen = GaugeMetricFamily(
        "vigil_sender_last_seen_timestamp_seconds", "when the sender's last message was logged", labels=["sender"]
    )
    counted = CounterMetricFamily("vigil_sender_messages", "messages logged from the sender", labels=["sender"])
    for sender, last_us, messages in report.get("senders") or ():
        seen.add_metric([str(sender)], last_us / 1e6)
        counted.add_metric([str(sender)], messages)
    return [seen, counted]


def _alerts(report: Mapping[str, Any]) -> list[Family]:
    """Each alert that holds (1, by rule and subject), alerts raised and webhook notices sent and failed."""
    alerts = report.get("alerts")
    if not isinstance(alerts, Mapping):
        return []
    active = GaugeMetricFamily("vigil_alert_active", "1 for each alert that holds now", labels=["rule", "subject"])
    for alert in alerts["active"]:
        active.add_metric([str(alert["rule"]), str(alert["subject"])], 1.0)
    return [
        active,
        _counter("vigil_alerts_raised", "alerts raised since the node started", alerts["raised_total"]),
        _counter("vigil_alert_webhook_sent", "alert notices the webhook took", alerts["webhook_sent"]),
        _counter("vigil_alert_webhook_failed", "alert notices the webhook never took", alerts["webhook_failed"]),
    ]


def _supervision(report: Mapping[str, Any]) -> list[Family]:
    children = report.get("supervision")
    if not isinstance(children, list):
        return []
    restarts = CounterMetricFamily("vigil_part_restarts", "restarts of each part of the node", labels=["part"])
    state = GaugeMetricFamily("vigil_part_state", "1 for the state each part is in", labels=["part", "state"])
    for child in children:
        restarts.add_metric([str(child["name"])], child["restarts"])
        for name in _STATES:
            state.add_metric([str(child["name"]), name], 1.0 if child["state"] == name else 0.0)
    return [restarts, state]
