"""The read models: which tables each projection keeps, and what each event does to them.

Pure (no I/O). Every projection folds the same events the patient actors
fold (`actors.record`), with the same meaning, so the tables equal what the
actors report (a property test checks it):

- `patient_summary`: demographics, encounters (the active one has status
  `admitted`), allergies, medications and their status, merge links;
- `results`: each result as it stands (current version, correction count,
  abnormal flags) and every version in `result_versions`;
- `critical_worklist`: every result that was ever critical, open until a
  clinician acknowledges it (`ResultAcknowledged`) after its latest critical
  version (a new critical value opens the item again);
- `medication_administrations` and `charges`: one row per event;
- `phi_access_audit`: who read which patient's data, when, why, and whether
  they were allowed (`RecordAccessed`, which the authentication layer
  appends to the log).

Bad data never stops a projection: a value that does not fit its typed column
(a numeric result that is not a number, an amount too large, a time that is
not a time, an abnormal flag outside HL7 table 0078, a result status outside
table 0085) leaves the typed column
empty, the raw value stays in its text column, and an `Issue` is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Final, final

import msgspec

from engine.core.model import (
    Admitted,
    AllergyRecorded,
    ChargePosted,
    DemographicsUpdated,
    Discharged,
    EncounterCancelled,
    Event,
    MedicationAdministered,
    MedicationDispensed,
    MedicationOrdered,
    OrderCancelled,
    PatientMerged,
    RecordAccessed,
    ResultAcknowledged,
    ResultReported,
    Transferred,
)
from engine.projections.tables import Changes, Guard, Issue, Key, TableSpec

__all__ = ["PROJECTIONS", "TABLES", "Projection", "Record", "build_changes", "projection_names"]


@final
class Record(msgspec.Struct, frozen=True, gc=False):
    """What the projections need of a log record."""

    lsn: int
    recorded_at: str
    patients: tuple[str, ...]
    events: tuple[Event, ...]


_S = "text"
TABLES: Final[dict[str, TableSpec]] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "patients",
            ("patient",),
            {"family": _S, "given": "text[]", "birth_date": _S, "sex": _S, "address": _S, "deceased": "boolean"}
            | {"lsn": "bigint"},
        ),
        TableSpec(
            "encounters",
            ("patient", "encounter_id"),
            {"status": _S, "patient_class": _S, "location": _S, "admitted_at": _S, "discharged_at": _S}
            | {"lsn": "bigint"},
        ),
        TableSpec(
            "allergies",
            ("patient", "allergen_key"),
            {"code": _S, "code_text": _S, "code_system": _S, "category": _S, "severity": _S, "reactions": "text[]"}
            | {"lsn": "bigint"},
        ),
        TableSpec(
            "medications",
            ("patient", "order_id"),
            {"status": _S, "medication_code": _S, "medication_text": _S, "medication_system": _S, "lsn": "bigint"},
        ),
        TableSpec("patient_links", ("merged",), {"surviving": _S, "lsn": "bigint"}),
        TableSpec(
            "results",
            ("patient", "result_key"),
            {"code": _S, "code_text": _S, "code_system": _S, "value": _S, "value_numeric": "numeric"}
            | {"value_type": _S, "units": _S, "reference_range": _S, "abnormal_flags": "text[]", "status": _S}
            | {"order_id": _S, "effective_at": _S, "effective_ts": "timestamptz", "versions": "int"}
            | {"recorded_at": _S, "lsn": "bigint"},
            insert_only=("effective_at", "effective_ts"),
            summed=("versions",),
        ),
        TableSpec(
            "result_versions",
            ("patient", "result_key"),
            {"lsn": "bigint", "seq": "int", "value": _S, "abnormal_flags": "text[]", "status": _S, "corrects": _S}
            | {"effective_at": _S, "recorded_at": _S},
            append_only=True,
        ),
        TableSpec(
            "critical_worklist",
            ("patient", "result_key"),
            {"opened_lsn": "bigint", "opened_at": _S, "last_lsn": "bigint", "last_critical_lsn": "bigint"}
            | {"code": _S, "code_text": _S}
            | {"value": _S, "units": _S, "abnormal_flags": "text[]", "status": _S, "effective_at": _S}
            | {"ack_lsn": "bigint", "acknowledged_by": _S, "acknowledged_at": _S, "ack_note": _S},
            guards=(
                Guard("opened_lsn", ("opened_at",), newest=False),
                Guard("last_lsn", ("code", "code_text", "value", "units", "abnormal_flags", "status", "effective_at")),
                Guard("ack_lsn", ("acknowledged_by", "acknowledged_at", "ack_note")),
                Guard("last_critical_lsn", ()),
            ),
        ),
        TableSpec(
            "medication_administrations",
            ("patient", "order_id"),
            {"lsn": "bigint", "seq": "int", "medication_code": _S, "medication_text": _S, "dose": _S}
            | {"dose_numeric": "numeric", "units": _S, "status": _S, "administered_at": _S},
            append_only=True,
        ),
        TableSpec(
            "phi_access_audit",
            ("patient",),
            {"lsn": "bigint", "seq": "int", "user_id": _S, "role": _S, "setting": _S, "action": _S, "reason": _S}
            | {"outcome": _S, "accessed_at": _S, "device": _S, "detail": _S, "severity": _S},
            append_only=True,
        ),
        TableSpec(
            "charges",
            ("patient", "transaction_id"),
            {"lsn": "bigint", "seq": "int", "code": _S, "code_text": _S, "transaction_type": _S, "quantity": _S}
            | {"amount": "numeric", "amount_raw": _S, "posted_at": _S},
            append_only=True,
        ),
    )
}

# HL7 table 0078 (interpretation codes), v2.5-2.9 and the FHIR v3 codes senders use.
_KNOWN_FLAGS: Final = frozenset(
    "L H LL HH < > N A AA U D B W S R I MS VS NEG POS IND NR RR QCF TOX E EX EXP LX HX HU LU NS SYN-R SYN-S".split()  # noqa: SIM905 -- a table, read as one
)
# HL7 table 0085 (observation result status), and the FHIR Observation.status codes the mapping passes on.
_KNOWN_RESULT_STATUS: Final = frozenset(
    "C D F I N O P R S U W X registered preliminary final amended corrected cancelled entered-in-error unknown".split()  # noqa: SIM905
)
_AMOUNT_LIMIT: Final = Decimal("1e12")  # numeric(14,2)


class _Context:
    """One event of one record for one patient: where a row or an issue comes from."""

    __slots__ = ("changes", "lsn", "patient", "recorded_at", "seq")

    def __init__(self, changes: Changes, record: Record, seq: int, patient: str) -> None:
        self.changes = changes
        self.lsn = record.lsn
        self.recorded_at = record.recorded_at
        self.seq = seq
        self.patient = patient

    def issue(self, projection: str, field: str, raw: str, reason: str) -> None:
        self.changes.issues.append(Issue(projection, self.lsn, self.seq, field, raw, reason))


Handler = Callable[[_Context, Event], None]


@final
class Projection(msgspec.Struct, frozen=True):
    """A read model: its tables and the handler of each event type it takes."""

    name: str
    tables: tuple[str, ...]
    handlers: dict[type, Handler]


# -- patient_summary ---------------------------------------------------------------


def _demographics(c: _Context, e: Event) -> None:
    assert isinstance(e, DemographicsUpdated)
    values: dict[str, object] = {"family": e.family, "given": list(e.given), "birth_date": e.birth_date, "sex": e.sex}
    c.changes["patients"].patch(
        (c.patient,), values | {"address": e.address, "deceased": e.deceased, "lsn": c.lsn}, create=True
    )


def _encounter(c: _Context, e: Event) -> None:
    assert isinstance(e, Admitted | Transferred | Discharged | EncounterCancelled)
    values: dict[str, object]
    if isinstance(e, Admitted):
        values = {"status": "admitted", "patient_class": e.patient_class, "location": e.location}
        values |= {"admitted_at": e.admitted_at, "discharged_at": None}
    elif isinstance(e, Transferred):
        values = {"location": e.to_location}
    elif isinstance(e, Discharged):
        values = {"status": "discharged", "discharged_at": e.discharged_at}
    elif e.cancels == "discharge":
        values = {"status": "admitted", "discharged_at": None}
    elif e.cancels == "admission":
        values = {"status": "cancelled"}
    else:
        values = {}  # a cancelled transfer: the location before it is not known from the event
    c.changes["encounters"].patch((c.patient, e.encounter_id), values | {"lsn": c.lsn}, create=True)


def _allergy(c: _Context, e: Event) -> None:
    assert isinstance(e, AllergyRecorded)
    values: dict[str, object] = {
        "code": e.allergen.code,
        "code_text": e.allergen.text,
        "code_system": e.allergen.system,
    }
    values |= {"category": e.category, "severity": e.severity}
    key = (c.patient, e.allergen.code or e.allergen.text)
    c.changes["allergies"].patch(key, values | {"reactions": list(e.reactions), "lsn": c.lsn}, create=True)


_MEDICATION_STATUS: Final = {
    MedicationOrdered: "ordered",
    MedicationDispensed: "dispensed",
    MedicationAdministered: "administered",
}


def _medication(c: _Context, e: Event) -> None:
    assert isinstance(e, MedicationOrdered | MedicationDispensed | MedicationAdministered)
    values: dict[str, object] = {"status": _MEDICATION_STATUS[type(e)], "medication_code": e.medication.code}
    values |= {"medication_text": e.medication.text, "medication_system": e.medication.system}
    c.changes["medications"].patch((c.patient, e.order_id), values | {"lsn": c.lsn}, create=True)


def _order_cancelled(c: _Context, e: Event) -> None:
    assert isinstance(e, OrderCancelled)
    # Only a medication the patient has: an update, never a new row.
    c.changes["medications"].patch((c.patient, e.order_id), {"status": "cancelled", "lsn": c.lsn}, create=False)


def _merged(c: _Context, e: Event) -> None:
    assert isinstance(e, PatientMerged)
    if c.patient == e.surviving:
        c.changes["patient_links"].patch((e.merged,), {"surviving": e.surviving, "lsn": c.lsn}, create=True)


# -- results and the critical worklist -----------------------------------------------


def _result(c: _Context, e: Event) -> None:
    assert isinstance(e, ResultReported)
    flags = list(e.abnormal_flags)
    for flag in flags:
        if flag not in _KNOWN_FLAGS:
            c.issue("results", "abnormal_flags", flag, "not a code of HL7 table 0078")
    if e.status and e.status not in _KNOWN_RESULT_STATUS:
        c.issue("results", "status", e.status, "not a code of HL7 table 0085")
    effective = e.effective_at or c.recorded_at
    values: dict[str, object] = {
        "code": e.code.code,
        "code_text": e.code.text,
        "code_system": e.code.system,
        "value": e.value,
        "value_numeric": _numeric(c, e),
        "value_type": e.value_type,
        "units": e.units,
        "reference_range": e.reference_range,
        "abnormal_flags": flags,
        "status": e.status,
        "order_id": e.order_id,
        "effective_at": effective,
        "effective_ts": _timestamp(c, effective),
        "versions": 1,
        "recorded_at": c.recorded_at,
        "lsn": c.lsn,
    }
    c.changes["results"].patch((c.patient, e.result_key), values, create=True)
    version = (c.patient, e.result_key, c.lsn, c.seq, e.value, flags, e.status, e.corrects, e.effective_at)
    c.changes["result_versions"].append((*version, c.recorded_at))


def _numeric(c: _Context, e: ResultReported) -> Decimal | None:
    if e.value_type not in ("NM", "SN") or not e.value:
        return None
    try:
        number = Decimal(e.value)
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        c.issue("results", "value", e.value, f"not a number, though the value type is {e.value_type}")
        return None
    return number


def _timestamp(c: _Context, text: str) -> datetime | None:
    """A full ISO 8601 time with an offset; a date or a time without one is kept as text only."""
    if len(text) <= 10:
        return None  # a date, or a coarser time: only the text column holds it
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        c.issue("results", "effective_at", text, "not an ISO 8601 time")
        return None
    return moment if moment.tzinfo is not None else None


def is_critical(result: ResultReported, critical_flags: frozenset[str]) -> bool:
    return not critical_flags.isdisjoint(result.abnormal_flags)


def _worklist_result(critical_flags: frozenset[str], on_worklist: set[Key] | None) -> Handler:
    """Results into the worklist; `on_worklist`, when given, is the caller's set of keys that may have an item.

    A normal result can only update an item a critical version made; with the
    set, normal results of keys never critical cost nothing (most results).
    """

    def handle(c: _Context, e: Event) -> None:
        assert isinstance(e, ResultReported)
        key = (c.patient, e.result_key)
        critical = is_critical(e, critical_flags)
        if on_worklist is not None:
            if critical:
                on_worklist.add(key)
            elif key not in on_worklist:
                return
        values: dict[str, object] = {
            "last_lsn": c.lsn,
            "code": e.code.code,
            "code_text": e.code.text,
            "value": e.value,
            "units": e.units,
            "abnormal_flags": list(e.abnormal_flags),
            "status": e.status,
            "effective_at": e.effective_at or c.recorded_at,
        }
        if critical:
            values["opened_lsn"] = c.lsn
            values["opened_at"] = c.recorded_at
            values["last_critical_lsn"] = c.lsn
        # A later, normal version of a critical result updates its item; a normal result makes none.
        c.changes["critical_worklist"].patch(key, values, create=critical)

    return handle


def _acknowledged(c: _Context, e: Event) -> None:
    assert isinstance(e, ResultAcknowledged)
    values: dict[str, object] = {
        "ack_lsn": c.lsn,
        "acknowledged_by": e.by,
        "acknowledged_at": e.acknowledged_at,
        "ack_note": e.note,
    }
    c.changes["critical_worklist"].patch((c.patient, e.result_key), values, create=False)


# -- administrations and charges ------------------------------------------------------


def _administration(c: _Context, e: Event) -> None:
    assert isinstance(e, MedicationAdministered)
    dose: Decimal | None = None
    if e.dose:
        try:
            dose = Decimal(e.dose)
        except InvalidOperation:
            c.issue("medication_administrations", "dose", e.dose, "not a number")
    if dose is not None and not dose.is_finite():
        c.issue("medication_administrations", "dose", e.dose, "not a number")
        dose = None
    row = (c.patient, e.order_id, c.lsn, c.seq, e.medication.code, e.medication.text, e.dose, dose, e.units)
    c.changes["medication_administrations"].append((*row, e.status, e.administered_at))


def _charge(c: _Context, e: Event) -> None:
    assert isinstance(e, ChargePosted)
    amount: Decimal | None = None
    if e.amount:
        try:
            amount = Decimal(e.amount)
        except InvalidOperation:
            amount = None
        if amount is None or not amount.is_finite() or abs(amount) >= _AMOUNT_LIMIT:
            c.issue("charges", "amount", e.amount, "not an amount below 10^12")
            amount = None
    code, text = (e.code.code, e.code.text) if e.code is not None else ("", "")
    row = (c.patient, e.transaction_id, c.lsn, c.seq, code, text, e.transaction_type, e.quantity, amount)
    c.changes["charges"].append((*row, e.amount, e.posted_at))


def _accessed(c: _Context, e: Event) -> None:
    assert isinstance(e, RecordAccessed)
    row = (c.patient, c.lsn, c.seq, e.user, e.role, e.setting, e.action, e.reason, e.outcome, e.at)
    c.changes["phi_access_audit"].append((*row, e.device, e.detail, e.severity))


def projections(critical_flags: Iterable[str], on_worklist: set[Key] | None = None) -> dict[str, Projection]:
    """Every projection; `critical_flags` are the OBX-8 codes that put a result on the worklist.

    `on_worklist`: the (patient, result key) pairs the worklist may hold,
    kept up to date by the worklist projection (see `_worklist_result`).
    """
    encounter: dict[type, Handler] = dict.fromkeys((Admitted, Transferred, Discharged, EncounterCancelled), _encounter)
    medication: dict[type, Handler] = dict.fromkeys(
        (MedicationOrdered, MedicationDispensed, MedicationAdministered), _medication
    )
    summary: dict[type, Handler] = {DemographicsUpdated: _demographics, AllergyRecorded: _allergy}
    summary |= encounter | medication | {OrderCancelled: _order_cancelled, PatientMerged: _merged}
    administrations: dict[type, Handler] = {MedicationAdministered: _administration}
    worklist: dict[type, Handler] = {
        ResultReported: _worklist_result(frozenset(critical_flags), on_worklist),
        ResultAcknowledged: _acknowledged,
    }
    found = (
        Projection("patient_summary", ("patients", "encounters", "allergies", "medications", "patient_links"), summary),
        Projection("results", ("results", "result_versions"), {ResultReported: _result}),
        Projection("critical_worklist", ("critical_worklist",), worklist),
        Projection("medication_administrations", ("medication_administrations",), administrations),
        Projection("charges", ("charges",), {ChargePosted: _charge}),
        Projection("phi_access_audit", ("phi_access_audit",), {RecordAccessed: _accessed}),
    )
    return {p.name: p for p in found}


PROJECTIONS: Final = projections(("HH", "LL", "AA"))  # the names and tables; handlers use the configured flags


def projection_names() -> tuple[str, ...]:
    return tuple(PROJECTIONS)


def build_changes(
    records: Iterable[Record],
    applied: Mapping[str, int],
    chosen: Mapping[str, Projection],
    into: Changes | None = None,
) -> Changes:
    """The changes of records, in log order, for each chosen projection past its applied LSN.

    `into` goes on from an earlier call's changes (a batch built in slices).
    A record touching several patients (a merge) is applied to each, as the
    actors are told of it; a merge link is kept once, by the survivor.
    """
    changes = into if into is not None else Changes(TABLES)
    by_type: dict[type, list[tuple[int, Handler]]] = {}
    for name, projection in chosen.items():
        for event_type, handler in projection.handlers.items():
            by_type.setdefault(event_type, []).append((applied[name], handler))
    for record in records:
        lsn = record.lsn
        for seq, event in enumerate(record.events):
            handlers = by_type.get(type(event))
            if handlers is None:
                continue
            for patient in record.patients:
                context = _Context(changes, record, seq, patient)
                for position, handler in handlers:
                    if lsn > position:
                        handler(context, event)
    return changes
