"""Spans and metrics the node emits: one span per message, lane and outcome on it, and never PHI."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import anyio
import msgspec
import pytest
import structlog
from opentelemetry import trace

from engine.core.mllp import frame
from engine.infra.config import Config
from engine.infra.logging_setup import configure_logging
from engine.infra.route_config import RouteConfig
from engine.infra.telemetry import ATTRIBUTES_ALLOWED
from engine.node import Node
from tests.harness.helpers import hl7
from tests.harness.otel import READER, SPANS


def test_one_span_per_message_with_lane_and_outcome_and_no_phi(tmp_path: Path) -> None:
    """Spans carry only Vigil's allowed attributes; canary PHI appears nowhere in them; metrics count."""
    name, mrn = "Zyxwvutsrqp", "CANARY424242"
    good = hl7(
        "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|T1|P|2.5.1",
        f"PID|1||{mrn}^^^GENHOSP^MR||{name}^Ada||19230417|F",
        "OBX|1|NM|2823-3^K^LN||6.9|mmol/L||HH",
    )
    bad = hl7("MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|T2|P|2.5.1", "OBR|1|P|F|X")
    # The providers are process-global, so other node tests in the run feed them too: count only this run.
    SPANS.clear()
    before = _message_counts()
    results = anyio.run(functools.partial(Node(Config(), tmp_path).run, stdin=good + bad))
    assert [r.outcome for r in results] == ["accepted", "rejected"]
    spans = [s for s in SPANS.get_finished_spans() if s.name == "vigil.message"]
    assert len(spans) == 2
    assert {s.attributes["vigil.outcome"] for s in spans if s.attributes} == {"accepted", "rejected"}
    for span in spans:
        attributes = dict(span.attributes or {})
        assert set(attributes) <= ATTRIBUTES_ALLOWED
        assert not any(name in str(v) or mrn in str(v) for v in attributes.values())
    critical = next(s for s in spans if s.attributes and s.attributes.get("vigil.outcome") == "accepted")
    assert critical.attributes is not None
    assert critical.attributes["vigil.lane"] == "critical"
    after = _message_counts()
    counted = {k: after[k] - before.get(k, 0) for k in after}
    assert {k: n for k, n in counted.items() if n} == {"accepted": 1, "rejected": 1}  # other tests' outcomes: 0


def _message_counts() -> dict[str, int]:
    """The cumulative `vigil.messages` count per outcome, summed over lanes."""
    counted: dict[str, int] = {}
    data = READER.get_metrics_data()
    if data is None:
        return counted
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != "vigil.messages":
                    continue
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    outcome = str((point.attributes or {})["vigil.outcome"])
                    counted[outcome] = counted.get(outcome, 0) + int(point.value)  # type: ignore[union-attr]
    return counted


def test_a_log_line_inside_a_span_carries_its_trace_and_span_ids(capsys: pytest.CaptureFixture[str]) -> None:
    """The trace context reaches the log record, so a log line can be found from its trace and back."""
    configure_logging("debug", json=True)
    try:
        with trace.get_tracer("test").start_as_current_span("work") as span:
            structlog.get_logger("test").info("inside")
        structlog.get_logger("test").info("outside")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    inside, outside = lines[-2], lines[-1]
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in outside


def test_a_reused_control_id_and_replaced_text_are_counted(tmp_path: Path) -> None:
    """`vigil.control_ids.reused` and `vigil.messages.invalid_text` count what `vigil status` counts."""
    msh = "MSH|^~\\&|ADT|GENHOSP|VIGIL|GENHOSP|2026||ADT^{event}^ADT_A01|R1|P|2.5.1"
    pid = "PID|1||MRN8^^^GENHOSP^MR||Doe^Jane||19700101|F"
    admit, discharge = hl7(msh.format(event="A01"), pid), hl7(msh.format(event="A03"), pid)
    stray = hl7(msh.format(event="A08").replace("R1", "R2"), pid, "NTE|1||x\xff").replace(b"\xc3\xbf", b"\xff")
    before = {name: _total(name) for name in ("vigil.control_ids.reused", "vigil.messages.invalid_text")}
    results = anyio.run(functools.partial(Node(Config(), tmp_path).run, stdin=admit + discharge + stray))
    assert [r.outcome for r in results] == ["accepted"] * 3
    assert {name: _total(name) - count for name, count in before.items()} == {
        "vigil.control_ids.reused": 1,
        "vigil.messages.invalid_text": 1,
    }


def _total(name: str) -> int:
    """A counter's cumulative value, summed over its points (0 before its first add)."""
    data = READER.get_metrics_data()
    if data is None:
        return 0
    return sum(
        int(point.value)  # type: ignore[union-attr]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points  # type: ignore[union-attr]
    )


def test_a_routes_deliveries_and_backlog_are_metrics(tmp_path: Path) -> None:
    """`vigil.route.delivered` and `vigil.route.backlog`, by route and lane, while the node runs."""
    out = tmp_path / "out"
    route = RouteConfig(name="archive", destination=f"folder:{out}")
    node = Node(msgspec.structs.replace(Config(), routes=(route,)), tmp_path / "data")
    msh = "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|M{n}|P|2.5.1"
    messages = [hl7(msh.format(n=n), f"PID|1||MRN{n}^^^GENHOSP^MR", "OBX|1|NM|K||4.1") for n in range(3)]

    async def run() -> dict[str, float]:
        async with anyio.create_task_group() as tg:
            port = await tg.start(functools.partial(node.run, mllp=("127.0.0.1", 0)))
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                for raw in messages:
                    await stream.send(frame(raw))
                    await stream.receive()
            with anyio.fail_after(30):
                while len(list(out.glob("*.hl7"))) < 3:  # noqa: ASYNC110 -- files another task writes
                    await anyio.sleep(0.02)
                while _route_points("vigil.route.delivered").get(("archive", "standard"), 0) < 3:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            seen = {"delivered": _route_points("vigil.route.delivered")[("archive", "standard")]}
            seen |= {f"backlog.{lane}": n for (_, lane), n in _route_points("vigil.route.backlog").items()}
            node.stop()
        return seen

    SPANS.clear()
    seen = anyio.run(run)
    assert seen == {"delivered": 3, "backlog.critical": 0, "backlog.standard": 0, "backlog.batch": 0}
    # Each delivery is a span in the trace of the message it delivers: a child of the span that received it.
    spans = SPANS.get_finished_spans()
    received = {s.context.span_id: s for s in spans if s.name == "vigil.message"}
    delivered = [s for s in spans if s.name == "vigil.route.deliver" and (s.attributes or {}).get("vigil.route")]
    assert len(delivered) == 3
    for span in delivered:
        assert span.parent is not None
        parent = received[span.parent.span_id]
        assert parent.context.trace_id == span.context.trace_id
        assert (span.attributes or {})["vigil.lsn"] == (parent.attributes or {})["vigil.lsn"]
        assert set(span.attributes or {}) <= ATTRIBUTES_ALLOWED


def _route_points(name: str) -> dict[tuple[str, str], float]:
    data = READER.get_metrics_data()
    points: dict[tuple[str, str], float] = {}
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:  # type: ignore[union-attr]
                        attributes = point.attributes or {}
                        key = (str(attributes["vigil.route"]), str(attributes["vigil.lane"]))
                        points[key] = point.value  # type: ignore[union-attr]
    return points
