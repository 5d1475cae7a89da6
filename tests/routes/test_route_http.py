"""Routes over HTTP: FHIR transaction Bundles to a receiver that checks each one, and HL7 v2 over HTTP.

The receiver runs in its own process and judges every Bundle with
`fhir.resources` (tests/harness/http_receiver.py); what it refuses, the
route shows with the server's OperationOutcome and holds that patient only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.fhir import resource_id
from engine.core.model import Envelope, Kind, Lane, Unrecognized
from engine.infra.route_config import RouteConfig
from engine.infra.tls import client_context
from engine.routes import Route
from engine.routes.http_destination import read_http_answer
from engine.routes.outcome import Verdict
from engine.wal import open_wal
from tests.harness.fhir_checks import check_transaction
from tests.harness.helpers import hl7
from tests.harness.http_receiver import HttpReceiver
from tests.harness.otel import SPANS
from tests.harness.route_helpers import route_envelope, running, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """The node runs on asyncio; routes are its floor, not the runtime floor (which runs on both)."""
    return "asyncio"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[HttpReceiver]:
    downstream = HttpReceiver(tmp_path)
    downstream.start()
    yield downstream
    downstream.kill()


def _no_patient(i: int) -> Envelope:
    """A master file update: no patient, nothing a FHIR transaction carries."""
    raw = hl7(f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261205||MFN^M02|C{i:06d}|P|2.5.1", "MFI|PRA||UPD")
    return Envelope(
        message_id=f"hl7:LAB|GENHOSP|C{i:06d}",
        kind=Kind.HL7V2,
        message_type="MFN^M02",
        patient=None,
        lane=Lane.BATCH,
        lane_reason="test",
        received_at="2026-12-05T10:00:00Z",
        source="test",
        raw=raw,
        events=(Unrecognized("MFN^M02", "master file"),),
    )


async def test_fhir_bundles_arrive_valid_in_order_per_patient_and_a_refusal_holds_only_its_patient(
    tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.set_mode("503", refuse=("P0",))  # the server is busy first; P0 it will never take
    ids = {resource_id("Bundle", f"hl7:LAB|GENHOSP|C{i:06d}"): i for i in range(31)}
    config = {"transform": "fhir", "connections": 3, "timezone": "Europe/London"}
    async with open_wal(tmp_path / "wal") as wal:
        route = Route(
            RouteConfig(
                name="fhir",
                destination=f"http://127.0.0.1:{receiver.port}/fhir",
                retry_base_s=0.05,
                retry_max_s=0.2,
                **config,  # type: ignore[arg-type]
            ),
            wal,
            tmp_path / "route",
            config_dir=tmp_path,
            tls_context=client_context,
        )
        SPANS.clear()
        async with running(route):
            await wal.append(
                [route_envelope(i, f"H|P{i % 3}", Lane.CRITICAL if i == 9 else Lane.STANDARD) for i in range(30)]
            )
            await wal.append([_no_patient(30)])
            route.notify()
            await until(lambda: route.statistics().retries >= 3, 10)
            assert route.statistics().delivered == 0
            receiver.set_mode("ok", refuse=("P0",))
            await until(lambda: route.statistics().delivered == 20 and len(route.refusals()) == 1, 20)
            stats = route.statistics()
            [refusal] = route.refusals()
    posted = receiver.posted()
    assert all(p.path == "/fhir" and p.content_type == "application/fhir+json" for p in posted)
    order: dict[str, list[int]] = {}
    for p in posted:
        bundle = p.json()
        assert check_transaction(p.body) is None
        patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        order.setdefault(patient["identifier"][0]["value"], []).append(ids[bundle["id"]])
    assert set(order) == {"P1", "P2"}
    for sent in order.values():
        assert sent == sorted(set(sent))  # log order, each once (a 503 is not a delivery)
    assert (refusal.lsn, refusal.code, refusal.patient) == (1, "422", "H|P0")
    assert refusal.answer == "error business-rule: unknown patient"
    assert stats.held_patients == 1
    assert stats.nothing_to_send == 1  # the master file update: settled, not sent
    # Each delivery is a span, and the receiver got its trace context.
    spans = {s.context.trace_id: s for s in SPANS.get_finished_spans() if s.name == "vigil.route.deliver"}
    assert spans
    for p in posted:
        trace_id = int(p.traceparent.split("-")[1], 16)
        assert spans[trace_id].attributes is not None
        assert spans[trace_id].attributes["vigil.route"] == "fhir"


async def test_hl7_v2_over_http_is_decided_by_the_ack_in_the_answer(tmp_path: Path, receiver: HttpReceiver) -> None:
    async with open_wal(tmp_path / "wal") as wal:
        route = Route(
            RouteConfig(name="v2", destination=f"http://127.0.0.1:{receiver.port}/hl7"),
            wal,
            tmp_path / "route",
            config_dir=tmp_path,
            tls_context=client_context,
        )
        async with running(route):
            await wal.append([route_envelope(i, f"H|P{i}") for i in range(5)])
            route.notify()
            await until(lambda: route.statistics().delivered == 5, 20)
    posted = receiver.posted()
    assert [p.body.split(b"|", 10)[9] for p in posted] == [f"C{i:06d}".encode() for i in range(5)]
    assert {p.content_type for p in posted} == {"x-application/hl7-v2+er7"}


_OUTCOME = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"no"}]}'
_AR = b"MSH|^~\\&|EHR|H|V|H|2026||ACK|9|P|2.5\rMSA|AR|C1|unknown patient"


@pytest.mark.parametrize(
    ("status", "body", "verdict", "answer"),
    [
        (200, b"{}", Verdict.DELIVERED, ""),
        (201, _AR, Verdict.REFUSED, "unknown patient"),
        (503, b"busy", Verdict.RETRY, "busy"),
        (429, b"", Verdict.RETRY, ""),
        (408, b"", Verdict.RETRY, ""),
        (400, _OUTCOME, Verdict.REFUSED, "error invalid: no"),
        (404, b"<html>not here</html>", Verdict.REFUSED, "<html>not here</html>"),
        (301, b"", Verdict.REFUSED, "redirected to https://elsewhere: check the route's URL"),
    ],
)
def test_what_an_http_answer_means(status: int, body: bytes, verdict: Verdict, answer: str) -> None:
    headers = {"content-type": "application/fhir+json", "location": "https://elsewhere"}
    attempt = read_http_answer(status, headers, body, b"C1")
    assert attempt.verdict is verdict
    assert attempt.answer == answer
