"""The acknowledgement command: an envelope the log keeps like any message, idempotent by request."""

from __future__ import annotations

from actors.record import PatientRecord
from engine.core.model import Coded, Kind, Lane, ResultAcknowledged, ResultReported
from engine.node.acknowledgements import acknowledgement, was_critical


def test_an_acknowledgement_is_a_critical_lane_command_with_the_request_as_its_identity() -> None:
    first = acknowledgement("MRN|1", "K|1", "dr.osei", "called ward", request_id="r1", now="2026-11-25T01:00:00Z")
    again = acknowledgement("MRN|1", "K|1", "dr.osei", "called ward", request_id="r1", now="2026-11-25T01:00:05Z")
    assert (first.kind, first.lane, first.patient) == (Kind.COMMAND, Lane.CRITICAL, "MRN|1")
    assert first.message_id == again.message_id == "command:r1"
    assert first.events == (ResultAcknowledged("K|1", "dr.osei", "2026-11-25T01:00:00Z", "called ward"),)
    assert b"dr.osei" in first.raw


def test_only_a_result_that_was_ever_critical_counts() -> None:
    code = Coded("2823-3", "Potassium")
    record = PatientRecord.empty("MRN|1")
    record = record.apply(1, "t1", "m1", [ResultReported("K|1", code, value="6.9", abnormal_flags=("HH",))])
    record = record.apply(2, "t2", "m2", [ResultReported("K|1", code, value="4.2", abnormal_flags=("N",))])
    record = record.apply(3, "t3", "m3", [ResultReported("K|2", code, value="4.0", abnormal_flags=("H",))])
    results = {r.result_key: r for r in record.view().results}
    assert was_critical(results["K|1"], ("HH", "LL"))  # corrected to normal since: still was critical
    assert not was_critical(results["K|2"], ("HH", "LL"))
    assert was_critical(results["K|2"], ("H",))  # a site's own critical codes
