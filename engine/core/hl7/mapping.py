"""Mapping a parsed HL7 v2 message to the model: identity, patient and events.

The mapper is driven by segments, not by a table per message type: an AL1 is
an allergy wherever it appears, an FT1 a charge, an RXA an administration. A
few things depend on the message: PID states demographics only in ADT, PV1
means admission/transfer/discharge only by the ADT event, MRG is a merge only
in the merge events, and OBX is document text (not a result) in MDM.

Only the fields each event needs are read, so the parse stays lazy.
"""

from __future__ import annotations

from typing import final

import msgspec

from engine.core.errors import ErrorLocation, MissingFieldError
from engine.core.hl7.message import Message, Segment
from engine.core.hl7.timestamp import to_iso
from engine.core.model import (
    Admitted,
    AllergyRecorded,
    ChargePosted,
    Coded,
    DemographicsUpdated,
    Discharged,
    DocumentRecorded,
    EncounterCancelled,
    Event,
    MedicationAdministered,
    MedicationDispensed,
    MedicationOrdered,
    OrderCancelled,
    OrderChanged,
    OrderPlaced,
    PatientMerged,
    ResultReported,
    Transferred,
    Unrecognized,
)

__all__ = ["Mapped", "map_message", "message_id", "patient_key"]

# Message codes whose every event is about one patient: PID-3 is required.
_PATIENT_REQUIRED = frozenset(
    {"ADT", "ORU", "ORM", "OML", "OMG", "RDE", "RDS", "RAS", "DFT", "BAR", "MDM", "VXU", "PPR"}
)
_NO_PATIENT_EVENTS = frozenset({"ADT^A20"})  # bed status update
_ADMIT = frozenset({"A01", "A04", "A06", "A07"})
_CANCELS = {"A11": "admission", "A12": "transfer", "A13": "discharge"}
_MERGES = frozenset({"A18", "A30", "A34", "A35", "A36", "A39", "A40", "A41", "A42"})
_CANCEL_CONTROLS = frozenset({"CA", "OC", "DC", "OD", "DR", "CR"})
_NO_ORDER_EVENT = frozenset({"RE", "OK", "UA", "UC", "UD", "UF", "UM", "UN", "UR", "UX"})
_CODED_TYPES = frozenset({"CE", "CWE", "CNE", "CF"})
_TEXT_TYPES = frozenset({"TX", "FT", "ST"})
_CORRECTIONS = frozenset({"C", "W"})


@final
class Mapped(msgspec.Struct, frozen=True):
    """What the mapper read: identity, patient keys and events."""

    message_id: str
    message_type: str
    patient: str | None
    other_patients: tuple[str, ...]
    events: tuple[Event, ...]


def message_id(msg: Message) -> str:
    """Sending application + facility + MSH-10, as written: stable across redelivery."""
    msh = msg.segments[0]
    return f"hl7:{msh.field(3) or ''}|{msh.field(4) or ''}|{msh.field(10) or ''}"


def patient_key(seg: Segment, field: int = 3) -> str | None:
    """`authority|identifier` from a CX list, preferring the MR (medical record) one.

    The authority is CX-4's namespace id, else its universal id; a CX without
    one keys as `|identifier`.
    """
    reps = seg.repetitions(field)
    if not reps:
        return None
    chosen = 0
    for i in range(len(reps)):
        if seg.value(field, i + 1, 5) == "MR" and seg.value(field, i + 1, 1):
            chosen = i
            break
    else:
        for i in range(len(reps)):
            if seg.value(field, i + 1, 1):
                chosen = i
                break
        else:
            return None
    ident = seg.value(field, chosen + 1, 1) or ""
    authority = seg.value(field, chosen + 1, 4, 1) or seg.value(field, chosen + 1, 4, 2) or ""
    return f"{authority}|{ident}"


def map_message(msg: Message) -> Mapped:
    """Read identity, patient and events from a parsed message.

    Raises:
        MissingFieldError: the message type needs a patient and PID-3 is absent.
        EscapeError: a field the mapper reads holds a malformed escape.
    """
    mtype = msg.message_type
    code, _, event = mtype.partition("^")
    pid = msg.segment("PID")
    patient = _patient(msg, pid, code, mtype)
    events: list[Event] = []
    others: list[str] = []
    if code == "ADT" and pid is not None:
        events.append(_demographics(pid))
        events.extend(_encounter_events(msg, event))
        if event in _MERGES:
            events.extend(_merges(msg, others))
    events.extend(_segment_events(msg, code))
    if not events:
        events.append(Unrecognized(mtype, "no clinical event mapped; kept whole"))
    return Mapped(message_id(msg), mtype, patient, tuple(others), tuple(events))


def _patient(msg: Message, pid: Segment | None, code: str, mtype: str) -> str | None:
    key = None
    if pid is not None:
        key = patient_key(pid, 3) or patient_key(pid, 2) or patient_key(pid, 4)
    if key is None and code in _PATIENT_REQUIRED and mtype not in _NO_PATIENT_EVENTS:
        if pid is None:
            raise MissingFieldError(f"{mtype} requires a PID segment and has none", ErrorLocation(segment="PID"))
        offset = msg.segment_offset(msg.segments.index(pid))
        raise MissingFieldError(
            f"{mtype} requires a patient identifier and PID-3 is empty",
            ErrorLocation(byte_offset=offset, segment="PID", field=3),
        )
    return key


def _coded(seg: Segment, field: int, rep: int = 1) -> Coded:
    comps = seg.components(field, rep)
    comps += [""] * (3 - len(comps))
    return Coded(comps[0], comps[1], comps[2])


def _demographics(pid: Segment) -> DemographicsUpdated:
    name = pid.components(5)
    address = [c for c in pid.components(11)[:6] if c]
    deceased = pid.value(30)
    return DemographicsUpdated(
        family=name[0] if name else "",
        given=tuple(n for n in name[1:3] if n),
        birth_date=to_iso(pid.value(7)),
        sex=pid.value(8) or "",
        address=", ".join(address),
        deceased=True if deceased == "Y" else False if deceased == "N" else None,
    )


def _encounter_events(msg: Message, event: str) -> list[Event]:
    pv1 = msg.segment("PV1")
    if pv1 is None:
        return []
    encounter = pv1.value(19) or ""
    if event in _ADMIT:
        return [
            Admitted(
                encounter_id=encounter,
                patient_class=pv1.value(2) or "",
                location=_location(pv1, 3),
                admission_type=pv1.value(4) or "",
                attending=" ".join(c for c in pv1.components(7)[:3] if c),
                admitted_at=to_iso(pv1.value(44)) or _event_time(msg),
            )
        ]
    if event == "A02":
        return [Transferred(encounter, _location(pv1, 6), _location(pv1, 3), _event_time(msg))]
    if event == "A03":
        return [Discharged(encounter, pv1.value(36) or "", to_iso(pv1.value(45)) or _event_time(msg))]
    if event in _CANCELS:
        return [EncounterCancelled(encounter, _CANCELS[event])]
    return []


def _location(pv1: Segment, field: int) -> str:
    # PL: point of care ^ room ^ bed ^ facility ...
    return "/".join(c for c in pv1.components(field)[:4] if c)


def _event_time(msg: Message) -> str | None:
    evn = msg.segment("EVN")
    if evn is not None:
        return to_iso(evn.value(6)) or to_iso(evn.value(2))
    return to_iso(msg.segments[0].value(7))


def _merges(msg: Message, others: list[str]) -> list[Event]:
    out: list[Event] = []
    pids = msg.all("PID")
    for i, mrg in enumerate(msg.all("MRG")):
        surviving = patient_key(pids[min(i, len(pids) - 1)], 3)
        merged = patient_key(mrg, 1) or patient_key(mrg, 4)
        if surviving and merged:
            out.append(PatientMerged(surviving, merged))
            others.append(merged)
            if i and surviving not in others:
                others.append(surviving)
    return out


def _segment_events(msg: Message, code: str) -> list[Event]:
    """Events from order groups (ORC...), results, pharmacy, allergies, charges, documents."""
    events: list[Event] = []
    order = _OrderGroup(None, 0)
    obr: Segment | None = None
    for seg in msg:
        sid = seg.id
        if sid == "ORC":
            order.flush(events)
            order = _OrderGroup(seg, len(events))
            obr = None
        elif sid == "OBR":
            obr = seg
            if order.orc is not None and order.obr is None:
                order.obr = seg
        elif sid in ("RXE", "RXO"):
            order.pharmacy = seg
        elif sid == "TQ1":
            order.tq1 = order.tq1 or seg
        elif sid == "OBX" and code != "MDM":
            events.append(_result(seg, obr, order))
        elif sid == "RXD":
            order.fulfilled = True
            events.append(_dispensed(seg, order))
        elif sid == "RXA":
            order.fulfilled = True
            events.append(_administered(seg, order))
        elif sid in ("AL1", "IAM"):
            events.append(_allergy(seg))
        elif sid == "FT1":
            events.append(_charge(seg))
        elif sid == "TXA":
            events.append(_document(seg))
    order.flush(events)
    return events


class _OrderGroup:
    """An ORC and the segments that detail it, until the next ORC."""

    __slots__ = ("fulfilled", "obr", "orc", "pharmacy", "position", "tq1")

    def __init__(self, orc: Segment | None, position: int) -> None:
        self.orc = orc
        # Where the ORC stood among the events: its event goes there, in message order.
        self.position = position
        self.obr: Segment | None = None
        self.pharmacy: Segment | None = None
        self.tq1: Segment | None = None
        self.fulfilled = False

    @property
    def order_id(self) -> str:
        for seg in (self.orc, self.obr):
            if seg is not None:
                for field in (2, 3):
                    value = seg.value(field)
                    if value:
                        return value
        return ""

    @property
    def priority(self) -> str:
        if self.tq1 is not None and self.tq1.value(9):
            return self.tq1.value(9) or ""
        if self.orc is not None and self.orc.value(7, 1, 6):
            return self.orc.value(7, 1, 6) or ""
        if self.obr is not None:
            return self.obr.value(27, 1, 6) or self.obr.value(5) or ""
        if self.pharmacy is not None and self.pharmacy.id == "RXE":
            return self.pharmacy.value(1, 1, 6) or ""  # RXE-1 quantity/timing, before TQ1
        return ""

    def flush(self, events: list[Event]) -> None:
        orc = self.orc
        if orc is None or self.fulfilled:
            return
        control = orc.value(1) or ""
        if control in _NO_ORDER_EVENT:
            return
        oid = self.order_id
        if control in _CANCEL_CONTROLS:
            events.insert(self.position, OrderCancelled(oid, orc.value(16) or control))
        elif self.pharmacy is not None:
            rx = self.pharmacy
            give = 2 if rx.id == "RXE" else 1
            events.insert(
                self.position,
                MedicationOrdered(
                    oid,
                    _coded(rx, give),
                    dose=rx.value(3 if rx.id == "RXE" else 2) or "",
                    units=rx.value(5 if rx.id == "RXE" else 4) or "",
                    priority=self.priority,
                ),
            )
        elif control == "NW":
            code = _coded(self.obr, 4) if self.obr is not None else None
            ordered = to_iso(orc.value(9)) or (to_iso(self.obr.value(6)) if self.obr is not None else None)
            events.insert(self.position, OrderPlaced(oid, code, self.priority, ordered))
        else:
            code = _coded(self.obr, 4) if self.obr is not None else None
            events.insert(self.position, OrderChanged(oid, orc.value(5) or control, code, self.priority))


def _result(obx: Segment, obr: Segment | None, order: _OrderGroup) -> ResultReported:
    code = _coded(obx, 3)
    order_id = ""
    if obr is not None:
        order_id = obr.value(3) or obr.value(2) or ""
    order_id = order_id or order.order_id
    key = f"{order_id}|{code.code or code.text}|{obx.value(4) or ''}"
    status = obx.value(11) or ""
    effective = to_iso(obx.value(14)) or (to_iso(obr.value(7)) if obr is not None else None)
    return ResultReported(
        result_key=key,
        code=code,
        value=_observation_value(obx),
        value_type=obx.value(2) or "",
        units=obx.value(6) or obx.value(6, 1, 2) or "",
        reference_range=obx.value(7) or "",
        abnormal_flags=_repeated(obx, 8),
        status=status,
        effective_at=effective,
        order_id=order_id,
        corrects=key if status in _CORRECTIONS else None,
    )


def _repeated(seg: Segment, field: int) -> tuple[str, ...]:
    """The first component of every non-empty repetition of a field."""
    values = (seg.value(field, i + 1) for i in range(len(seg.repetitions(field))))
    return tuple(v for v in values if v)


def _observation_value(obx: Segment) -> str:
    vtype = obx.value(2) or ""
    reps = obx.repetitions(5)
    if not reps:
        return ""
    if vtype in _CODED_TYPES:
        comps = obx.components(5)
        return (comps[1] if len(comps) > 1 and comps[1] else comps[0]) if comps else ""
    if vtype == "SN":
        return "".join(obx.components(5))
    if vtype in _TEXT_TYPES and len(reps) > 1:
        return "\n".join(obx.value(5, i + 1) or "" for i in range(len(reps)))
    return obx.value(5) or ""


def _dispensed(rxd: Segment, order: _OrderGroup) -> MedicationDispensed:
    return MedicationDispensed(
        order.order_id,
        _coded(rxd, 2),
        quantity=rxd.value(4) or "",
        units=rxd.value(5) or "",
        dispensed_at=to_iso(rxd.value(3)),
    )


def _administered(rxa: Segment, order: _OrderGroup) -> MedicationAdministered:
    return MedicationAdministered(
        order.order_id,
        _coded(rxa, 5),
        dose=rxa.value(6) or "",
        units=rxa.value(7) or "",
        status=rxa.value(20) or "",
        administered_at=to_iso(rxa.value(3)),
    )


def _allergy(seg: Segment) -> AllergyRecorded:
    return AllergyRecorded(
        _coded(seg, 3),
        category=seg.value(2) or "",
        severity=seg.value(4) or "",
        reactions=_repeated(seg, 5),
    )


def _charge(ft1: Segment) -> ChargePosted:
    return ChargePosted(
        ft1.value(2) or ft1.value(1) or "",
        _coded(ft1, 7),
        transaction_type=ft1.value(6) or "",
        quantity=ft1.value(10) or "",
        amount=ft1.value(11) or "",
        posted_at=to_iso(ft1.value(4)),
    )


def _document(txa: Segment) -> DocumentRecorded:
    return DocumentRecorded(
        txa.value(12) or txa.value(1) or "",
        document_type=txa.value(2) or "",
        status=txa.value(17) or "",
        recorded_at=to_iso(txa.value(4)) or to_iso(txa.value(6)),
    )
