"""A patient's records reach its actor in log order, whichever lanes and sources they came by.

A patient's actor ignores a record at or below the last LSN it applied (so a
replayed tail changes nothing). A batch record made durable before a
critical one of the same patient, but handed to the actor after it, was
therefore missing from the live record, and from the snapshot saved of it.
Run in-process on the node's own loop, with batch work slicing at every
step, where a batch group's hand-on waited its turn.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from actors import PatientRecord
from engine.core.model import Kind
from engine.infra.config import Config, IngestConfig, LanesConfig
from engine.node import Node
from lanes import PacingSettings
from tests.harness.helpers import MSH_ORU, PID, hl7

KEY = "GENHOSP|MRN42"


def _oru(n: int, *, flag: str, processing: str) -> bytes:
    msh = MSH_ORU.replace("|MSG0001|P|", f"|{processing}{n}|{processing}|")
    obx = f"OBX|1|NM|2823-3^K^LN||{4 + n % 3}.{n % 10}|mmol/L|3.5-5.1|{flag}|||F"
    return hl7(msh, PID, f"ORC|RE|P{n}|F{n}", f"OBR|1|P{n}|F{n}|80048^BMP^CPT|||20261124100000", obx)


def test_a_patients_records_reach_its_actor_in_log_order_across_lanes(tmp_path: Path) -> None:
    """Non-production results (batch lane, one source) and critical ones (another source) for one patient,
    at once: the live record holds every record the log holds for that patient."""
    lanes = LanesConfig(pacing=PacingSettings(slice_ms=0.001))
    node = Node(Config(lanes=lanes, ingest=IngestConfig(parse_workers=0)), tmp_path / "data")
    outcome: dict[str, object] = {}

    async def scenario() -> None:
        intake = node.parts.intake

        async def send(raw: bytes, source: str) -> None:
            result, _reason = await intake.ingest_one(raw, source, Kind.HL7V2)
            assert result.outcome.value == "accepted"

        async with anyio.create_task_group() as tg:
            for n in range(80):
                tg.start_soon(send, _oru(n, flag="N", processing="T"), "billing-file")
                tg.start_soon(send, _oru(n, flag="HH", processing="P"), "lab")
        live = await node.patient(KEY)
        rebuilt = PatientRecord.empty(KEY).extend(
            (r.lsn, r.recorded_at, r.message_id, r.envelope.events) for r in node.wal.read_patient(KEY)
        )
        outcome.update(live=live.facts, rebuilt=len(rebuilt.facts), last=live.last_lsn)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(node.run)
            await scenario()
            node.stop()

    anyio.run(main, backend="asyncio")
    assert outcome["last"] == 160
    assert outcome["live"] == outcome["rebuilt"]
