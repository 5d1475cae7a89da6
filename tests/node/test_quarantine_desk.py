"""Operators' actions on quarantined input (retry, resend edited, discard, resolve), over a real log.

The desk's way into the log is the one a stopped node's CLI uses (decode,
append); the running node's way (its intake) is tested through a real
process in `tests/cli/test_quarantine_cli.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.core.decode import Decoder, decode_input
from engine.core.errors import ErrorLocation, MissingFieldError
from engine.core.outcome import IngestResult, Outcome
from engine.infra.clock import utc_now
from engine.node.quarantine_desk import QuarantineAction, QuarantineActionError, QuarantineDesk, refusal_of
from engine.node.refusals import Refusals
from engine.wal import OSFiles, Quarantine, WriteAheadLog, open_wal
from engine.wal.quarantine import POISON_RECORD
from lanes import ClassificationRules, Classifier
from tests.harness.helpers import MSH_ORU, hl7, oru

pytestmark = pytest.mark.anyio

NO_PID = hl7(MSH_ORU, "OBR|1|P|F|X")
FIXED = oru("OBX|1|NM|2823-3^K^LN||4.1|mmol/L|3.5-5.1|N|||F")
ERROR = MissingFieldError("ORU^R01 requires a patient identifier", ErrorLocation(segment="PID", field=3)).to_dict()


def _decoder() -> Decoder:
    return Decoder(Classifier(ClassificationRules()))


def _desk(quarantine: Quarantine, log: WriteAheadLog) -> QuarantineDesk:
    decoder = _decoder()

    async def ingest(raw: bytes, source: str) -> list[IngestResult]:
        envelopes = [d.envelope for d in decode_input(raw, decoder, received_at=utc_now(), source=source) if d.envelope]
        return [IngestResult(Outcome.ACCEPTED, (p.lsn,), p.duplicate) for p in await log.append(envelopes)]

    return QuarantineDesk(quarantine, ingest, refusal_of(decoder))


async def test_a_retry_still_refused_leaves_the_item_open_and_the_log_untouched(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q", OSFiles())
    qid = quarantine.add(NO_PID, source="mllp:127.0.0.1:5000", reason="no PID", error=ERROR, at="t1")
    async with open_wal(tmp_path / "wal") as log:
        with pytest.raises(QuarantineActionError, match=f"item {qid} is still refused: ORU.R01 requires a PID segment"):
            await _desk(quarantine, log).act(QuarantineAction.RETRY, qid, by="op.kim")
        assert log.last_lsn == 0
    item = quarantine.get(qid)
    assert item is not None
    assert item.open


async def test_a_resend_is_a_new_record_naming_the_item_and_the_item_names_it(tmp_path: Path) -> None:
    """The edited message goes into the log from `quarantine:<id>`; the original stays, resolved, with who and why."""
    quarantine = Quarantine(tmp_path / "q", OSFiles())
    qid = quarantine.add(NO_PID, source="mllp:127.0.0.1:5000", reason="no PID", error=ERROR, at="t1")
    async with open_wal(tmp_path / "wal") as log:
        desk = _desk(quarantine, log)
        answer = await desk.act(QuarantineAction.RESEND, qid, by="op.kim", note="PID added from ADT", raw=FIXED)
        [record] = list(log.read_from(1))
    assert answer == {"qid": qid, "outcome": "resent as edited: LSN 1", "lsns": [1]}
    assert (record.envelope.source, record.envelope.raw) == (f"quarantine:{qid}", FIXED)
    item = Quarantine(tmp_path / "q", OSFiles()).get(qid)  # as another process reads it
    assert item is not None
    assert (item.raw, item.resolved, item.resolved_by, item.note) == (
        NO_PID,
        "resent as edited: LSN 1",
        "op.kim",
        "PID added from ADT",
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "the edited message is empty"),
        (NO_PID, "the same as the original"),
        (hl7(MSH_ORU, "OBR|1|P|F|Y"), "the edited message is still refused"),
        (b"not hl7 at all", "the edited message is still refused"),
    ],
)
async def test_a_resend_that_cannot_be_accepted_says_why(tmp_path: Path, raw: bytes, expected: str) -> None:
    quarantine = Quarantine(tmp_path / "q", OSFiles())
    qid = quarantine.add(NO_PID, source="stdin", reason="no PID", error=ERROR, at="t1")
    async with open_wal(tmp_path / "wal") as log:
        with pytest.raises(QuarantineActionError, match=expected):
            await _desk(quarantine, log).act(QuarantineAction.RESEND, qid, by="op.kim", raw=raw)
        assert log.last_lsn == 0
    assert [i.open for i in quarantine.items()] == [True]


async def test_discard_and_resolve_need_a_reason_and_close_the_item_once(tmp_path: Path) -> None:
    quarantine = Quarantine(tmp_path / "q", OSFiles())
    first = quarantine.add(NO_PID, source="stdin", reason="no PID", error=ERROR, at="t1")
    second = quarantine.add(b"junk", source="stdin", reason="not HL7", error={}, at="t2")
    async with open_wal(tmp_path / "wal") as log:
        desk = _desk(quarantine, log)
        with pytest.raises(QuarantineActionError, match="say why"):
            await desk.act(QuarantineAction.DISCARD, first, by="op.kim", note="   ")
        assert await desk.act(QuarantineAction.DISCARD, first, by="op.kim", note="a test message") == {
            "qid": first,
            "outcome": "discarded",
        }
        await desk.act(QuarantineAction.RESOLVE, second, by="op.lee", note="the lab sent it again corrected")
        for action in QuarantineAction:
            with pytest.raises(QuarantineActionError, match=f"item {first} is already resolved: discarded"):
                await desk.act(action, first, by="op.lee", note="again", raw=FIXED)
        with pytest.raises(QuarantineActionError, match="no quarantined item 99"):
            await desk.act(QuarantineAction.RETRY, 99, by="op.lee")
        assert log.last_lsn == 0
    assert [(i.resolved, i.resolved_by) for i in quarantine.items()] == [
        ("discarded", "op.kim"),
        ("resolved", "op.lee"),
    ]


async def test_a_retry_of_what_now_decodes_is_accepted_once(tmp_path: Path) -> None:
    """Accepted after a configuration change (here: it was refused by a rule since relaxed): its LSN is named."""
    quarantine = Quarantine(tmp_path / "q", OSFiles())
    qid = quarantine.add(FIXED, source="stdin", reason="was refused by an old rule", error={}, at="t1")
    async with open_wal(tmp_path / "wal") as log:
        answer = await _desk(quarantine, log).act(QuarantineAction.RETRY, qid, by="op.kim")
        assert [r.envelope.source for r in log.read_from(1)] == [f"quarantine:{qid}"]
    assert answer["outcome"] == "accepted at LSN 1"


async def test_a_poison_record_is_not_retried_but_can_be_resent_corrected(tmp_path: Path) -> None:
    """A record its patient's actor kept failing on is in the log already: a retry would only be a duplicate."""
    quarantine = Quarantine(tmp_path / "q", OSFiles())
    qid = quarantine.add(
        FIXED,
        source="patient actor (LSN 7)",
        reason="failed its patient's actor repeatedly",
        error={"type": POISON_RECORD, "lsn": 7},
        at="t1",
    )
    async with open_wal(tmp_path / "wal") as log:
        desk = _desk(quarantine, log)
        with pytest.raises(QuarantineActionError, match=r"already in the log \(LSN 7\).*resend a corrected message"):
            await desk.act(QuarantineAction.RETRY, qid, by="op.kim")
        corrected = FIXED.replace(b"|4.1|", b"|4.2|")
        assert (await desk.act(QuarantineAction.RESEND, qid, by="op.kim", raw=corrected))["lsns"] == [1]


async def test_open_items_are_counted_by_age(tmp_path: Path) -> None:
    """`vigil status` says how long items have waited: under an hour, up to a day, older."""
    quarantine = Quarantine(tmp_path / "q", OSFiles())
    for at in ("2026-12-05T11:30:00.000Z", "2026-12-05T09:00:00.000Z", "2026-12-01T12:00:00Z", "not a time"):
        quarantine.add(b"x", source="stdin", reason="r", error={}, at=at)
    resolved = quarantine.add(b"y", source="stdin", reason="r", error={}, at="2026-11-01T00:00:00Z")
    quarantine.resolve(resolved, outcome="discarded", at="t", by="op.kim", note="test")
    counts = await Refusals(quarantine).open_by_age(datetime(2026, 12, 5, 12, 0, tzinfo=UTC))
    assert counts == {"under_1h": 1, "1h_to_1d": 1, "over_1d": 2}  # a time that cannot be read counts as old
