"""A duplicate is the same id and the same content: a reused control id is a new message.

Senders reuse MSH-10 (counters that reset, test systems, sample feeds). Such a
message used to be acknowledged and thrown away; now it is stored, answered
AA, and counted as "control id reused". A true resend (the same content, a
new MSH-7, other segment terminators) is still a duplicate.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.decode import Decoder, decode_input
from engine.core.identity import fhir_digest, hl7_digest
from engine.core.mllp import frame
from engine.core.model import Envelope
from engine.wal import open_wal
from tests.conftest import corpus_files
from tests.harness.helpers import PID, hl7
from tests.harness.node_process import run_stdin

ROOT = Path(__file__).resolve().parents[2]
VIGIL = str(ROOT / "bin" / "vigil")
DECODER = Decoder()
MSH = "MSH|^~\\&|ADT|GENHOSP|VIGIL|GENHOSP|{time}||ADT^{event}^ADT_A01|CTL1|P|2.5.1"
ADMIT = hl7(MSH.format(time="20261124101500", event="A01"), PID, "PV1|1|I|W1^101^A")
DISCHARGE = hl7(MSH.format(time="20261124111500", event="A03"), PID, "PV1|1|I|W1^101^A")
HL7_FILES = corpus_files("hl7v2")


def _envelope(raw: bytes) -> Envelope:
    return DECODER.hl7(raw, received_at="2026-11-24T10:00:00Z", source="test")


# -- the digest -----------------------------------------------------------------


def test_a_resend_with_a_new_msh7_or_other_terminators_has_the_same_digest() -> None:
    """MSH-7 and the segment terminator are what a resend may change; nothing else."""
    restamped = ADMIT.replace(b"20261124101500", b"20261124101509", 1)
    assert hl7_digest(ADMIT) == hl7_digest(restamped)
    assert hl7_digest(ADMIT) == hl7_digest(ADMIT.replace(b"\r", b"\r\n"))
    assert hl7_digest(ADMIT) == hl7_digest(ADMIT.replace(b"\r", b"\n") + b"\n\n")
    assert hl7_digest(ADMIT) != hl7_digest(ADMIT.replace(b"Doe^Jane", b"Doe^Joan"))


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="|\r\n^~\\&"), min_size=1, max_size=40))
def test_any_change_outside_msh7_changes_the_digest(value: str) -> None:
    """Content that differs anywhere but MSH-7 is another message."""
    changed = hl7(MSH.format(time="20261124101500", event="A01"), PID, f"PV1|1|I|{value}")
    assert (hl7_digest(changed) == hl7_digest(ADMIT)) == (changed == ADMIT)
    assert hl7_digest(changed) != 0


def test_a_fhir_bundle_digest_ignores_its_timestamp_and_meta_only() -> None:
    """A changed Bundle that keeps its id is another message; a restamped one is not."""
    base = {"resourceType": "Bundle", "id": "b1", "type": "message", "timestamp": "2026-11-24T10:00:00Z"}
    entry = [{"resource": {"resourceType": "Patient", "id": "p1", "gender": "female"}}]
    one = json.dumps({**base, "entry": entry}).encode()
    restamped = json.dumps({**base, "timestamp": "2026-11-24T10:05:00Z", "meta": {"versionId": "2"}, "entry": entry})
    entry[0]["resource"]["gender"] = "male"
    changed = json.dumps({**base, "entry": entry}).encode()
    assert fhir_digest(one) == fhir_digest(restamped.encode())
    assert fhir_digest(one) != fhir_digest(changed)


# -- the log ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_log_keeps_a_reused_control_id_and_still_deduplicates_each_content(tmp_path: Path) -> None:
    """Admit and discharge under one MSH-10: both stored; each resend a duplicate, also after a restart."""
    admit, discharge = _envelope(ADMIT), _envelope(DISCHARGE)
    assert admit.message_id == discharge.message_id
    async with open_wal(tmp_path) as wal:
        [first] = await wal.append([admit])
        [second] = await wal.append([discharge])
        [again] = await wal.append([_envelope(ADMIT.replace(b"20261124101500", b"20261124101533", 1))])
        stats = wal.statistics()
    assert (first.lsn, first.duplicate) == (1, False)
    assert (second.lsn, second.duplicate) == (2, False)
    assert (again.lsn, again.duplicate) == (1, True)
    assert stats.reused_control_ids == 1
    for drop_saved_index in (False, True):  # the index saved at the stop, then rebuilt by the scan
        if drop_saved_index:
            (tmp_path / "index").unlink()
        async with open_wal(tmp_path) as wal:
            assert [p.lsn for p in await wal.append([admit, discharge])] == [1, 2]
            assert wal.last_lsn == 2
            assert wal.lookup(discharge.message_id, discharge.digest) == 2


@pytest.mark.anyio
async def test_a_reused_id_within_one_group_is_counted_too(tmp_path: Path) -> None:
    """Admit and discharge appended together: both stored, the second counted as a reused control id."""
    async with open_wal(tmp_path) as wal:
        positions = await wal.append([_envelope(ADMIT), _envelope(DISCHARGE)])
        assert [(p.lsn, p.duplicate) for p in positions] == [(1, False), (2, False)]
        assert wal.statistics().reused_control_ids == 1


# -- a node ---------------------------------------------------------------------


def test_a_node_stores_a_discharge_that_reuses_the_admissions_control_id(tmp_path: Path) -> None:
    """The discharge is accepted as new (not a duplicate), and the patient is discharged."""
    rows, _ = run_stdin(tmp_path, ADMIT + DISCHARGE + ADMIT)
    assert [(r["lsns"], r.get("duplicate", False)) for r in rows] == [([1], False), ([2], False), ([1], True)]

    async def kinds() -> list[str]:
        async with open_wal(tmp_path / "wal") as wal:
            return [type(e).__name__ for r in wal.read_from(1) for e in r.envelope.events]

    assert {"Admitted", "Discharged"} <= set(anyio.run(kinds))


@pytest.mark.corpus
@pytest.mark.skipif(not HL7_FILES, reason="public sample corpus not found (../shared/corpus beside the repository)")
def test_every_corpus_message_is_stored(tmp_path: Path) -> None:
    """139 samples, many reusing MSH-10: one record each, none answered as a duplicate."""
    feed = b"".join(frame(p.read_bytes()) for p in HL7_FILES)  # framed: a file may not end its last segment
    expected = sum(1 for p in HL7_FILES for d in decode_input(p.read_bytes(), DECODER, received_at="t", source="s"))
    rows, _ = run_stdin(tmp_path, feed)
    assert expected == len(rows)
    assert [r for r in rows if r["outcome"] != "accepted" or r.get("duplicate")] == []
    assert expected == len({lsn for r in rows for lsn in r["lsns"]})  # type: ignore[attr-defined]
