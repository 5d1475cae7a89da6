"""The read side's tables, and what the patient record fold says they must hold, in one comparable shape."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

import asyncpg

from actors.record import PatientRecord
from engine.core.decode import Decoder
from engine.core.feedgen import generate_feed
from engine.core.model import ChargePosted, MedicationAdministered, RecordAccessed, ResultAcknowledged, ResultReported
from engine.wal import WriteAheadLog
from engine.wal.record import LogRecord

Tables = dict[str, set[tuple[object, ...]]]
CRITICAL = frozenset({"HH", "LL", "AA"})


def folded(records: Iterable[LogRecord]) -> dict[str, PatientRecord]:
    """Each patient's record, as its actor folds it (every patient a record touches is told of it)."""
    found: dict[str, PatientRecord] = {}
    for r in records:
        for patient in r.patients:
            record = found.get(patient) or PatientRecord.empty(patient)
            found[patient] = record.apply(r.lsn, r.recorded_at, r.message_id, r.envelope.events)
    return found


def expected_tables(records: Sequence[LogRecord]) -> Tables:
    """What the projections must hold, from the actors' views."""
    t: Tables = {k: set() for k in ("patients", "encounters", "medications", "allergies", "results", "worklist")}
    t |= {"administrations": set(), "charges": set(), "access": set()}
    for patient, record in folded(records).items():
        view = record.view()
        d = view.demographics
        if d is not None:
            t["patients"].add((patient, d.family, tuple(d.given), d.birth_date, d.sex, d.address, d.deceased))
        for e in view.encounters:
            t["encounters"].add(
                (patient, e.encounter_id, e.status, e.patient_class, e.location, e.admitted_at, e.discharged_at)
            )
        for m in view.medications:
            last = m.events[-1]
            assert hasattr(last, "medication")
            t["medications"].add((patient, m.order_id, m.status, last.medication.code, last.medication.text))
        for a in view.allergies:
            t["allergies"].add((patient, a.allergen.code or a.allergen.text, a.severity, tuple(a.reactions)))
        for res in view.results:
            c = res.current
            t["results"].add(
                (
                    patient,
                    res.result_key,
                    c.value,
                    tuple(c.abnormal_flags),
                    c.status,
                    res.effective_at,
                    len(res.versions),
                )
            )
            critical = [
                f
                for f in res.versions
                if isinstance(f.event, ResultReported) and CRITICAL & set(f.event.abnormal_flags)
            ]
            if critical:
                # Acknowledged: by an acknowledgement after the latest critical version, else open.
                acks = [
                    f
                    for f in record.facts
                    if isinstance(f.event, ResultAcknowledged) and f.event.result_key == res.result_key
                ]
                last = acks[-1] if acks else None
                by = None
                if last is not None and last.lsn > critical[-1].lsn and isinstance(last.event, ResultAcknowledged):
                    by = last.event.by
                t["worklist"].add((patient, res.result_key, c.value, critical[0].lsn, by))
        for fact in record.facts:
            e = fact.event
            if isinstance(e, MedicationAdministered):
                t["administrations"].add((patient, e.order_id, fact.lsn, e.dose))
            elif isinstance(e, ChargePosted):
                t["charges"].add((patient, e.transaction_id, fact.lsn, e.amount))
    t["access"] = _accesses(records)
    return t


def _accesses(records: Sequence[LogRecord]) -> set[tuple[object, ...]]:
    """Accesses are not in the record fold: one row for every patient the record names."""
    return {
        (patient, r.lsn, e.user, e.action, e.outcome, e.device, e.severity)
        for r in records
        for e in r.envelope.events
        if isinstance(e, RecordAccessed)
        for patient in r.patients
    }


async def actual_tables(dsn: str, schema: str) -> Tables:
    """What the projections hold."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:

        async def rows(sql: str) -> set[tuple[object, ...]]:
            return {tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in await conn.fetch(sql)}

        return {
            "patients": await rows("SELECT patient, family, given, birth_date, sex, address, deceased FROM patients"),
            "encounters": await rows(
                "SELECT patient, encounter_id, status, patient_class, location, admitted_at, discharged_at FROM encounters"
            ),
            "medications": await rows(
                "SELECT patient, order_id, status, medication_code, medication_text FROM medications"
            ),
            "allergies": await rows("SELECT patient, allergen_key, severity, reactions FROM allergies"),
            "results": await rows(
                "SELECT patient, result_key, value, abnormal_flags, status, effective_at, versions FROM results"
            ),
            "worklist": await rows(
                "SELECT patient, result_key, value, opened_lsn, "
                "CASE WHEN ack_lsn > last_critical_lsn THEN acknowledged_by END FROM critical_worklist"
            ),
            "administrations": await rows("SELECT patient, order_id, lsn, dose FROM medication_administrations"),
            "charges": await rows("SELECT patient, transaction_id, lsn, amount_raw FROM charges"),
            "access": await rows(
                "SELECT patient, lsn, user_id, action, outcome, device, severity FROM phi_access_audit"
            ),
        }
    finally:
        await conn.close()


def differences(expected: Tables, actual: Tables) -> dict[str, tuple[set[tuple[object, ...]], set[tuple[object, ...]]]]:
    """Per table: (missing rows, unexpected rows); empty when they agree."""
    return {k: (expected[k] - actual[k], actual[k] - expected[k]) for k in expected if expected[k] != actual[k]}


def as_decimal(text: str) -> Decimal:
    return Decimal(text)


async def fill_log(wal: WriteAheadLog, count: int, seed: int = 7, patients: int = 25) -> None:
    """`count` messages of a generated feed into the log, 64 to an append."""
    decoder = Decoder()
    envelopes = [
        decoder.hl7(raw, received_at="t", source="s") for raw in generate_feed(count, seed=seed, patients=patients)
    ]
    for start in range(0, len(envelopes), 64):
        await wal.append(envelopes[start : start + 64])
