"""OTLP export of the node's spans and metrics: the optional `otlp` extra, switched on by the standard variables.

The core needs only the OpenTelemetry API (a no-op until a provider is
installed). When `OTEL_EXPORTER_OTLP_ENDPOINT` (or its `_TRACES_`/`_METRICS_`
forms) is set, `vigil run` installs the SDK with OTLP/HTTP exporters; the
rest of the standard `OTEL_*` variables (headers, resource attributes, export
interval) apply as usual. Without the extra, one warning says how to get it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import structlog
from opentelemetry import metrics, trace

__all__ = ["install_otlp_export"]

_log = structlog.get_logger("vigil.telemetry")
_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


def install_otlp_export(service_name: str) -> Callable[[], None] | None:
    """Install OTLP exporters when an endpoint is configured; return the flush-and-shutdown to call at exit."""
    if not any(os.environ.get(name) for name in _ENDPOINTS):
        return None
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        _log.warning("otel.exporter_missing", hint="install the otlp extra: pip install 'vigil[otlp]'")
        return None
    # Imported here: the SDK and exporter are an optional extra, not the core's dependencies.
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _log.info("otel.exporting", protocol="otlp/http")

    def shutdown() -> None:
        tracer_provider.shutdown()  # flushes the spans still batched
        meter_provider.shutdown()  # one last export of the metrics

    return shutdown
