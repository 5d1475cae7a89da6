"""The message model: the envelope every input becomes, and the clinical events.

Pure data (frozen msgspec Structs, no I/O). Events form one tagged union,
`Event`, so the write-ahead log and the record fold decode them with one
reused decoder. Times are ISO 8601 strings that keep the precision the sender
gave (`2026-11-24`, `2026-11-24T10:15`, `2026-11-24T10:15:03+01:00`): an HL7
timestamp to the minute must not pretend to know the second.

Anything the engine does not understand is kept whole: the envelope always
holds the original bytes, and a message with no mapped events carries an
`Unrecognized` event saying why.
"""

from __future__ import annotations

import enum
from typing import Final, final, get_args

import msgspec

from engine.core.errors import ErrorLocation

__all__ = [
    "EVENT_KINDS",
    "Admitted",
    "AllergyRecorded",
    "ChargePosted",
    "Coded",
    "DemographicsUpdated",
    "Discharged",
    "DocumentRecorded",
    "EncounterCancelled",
    "Envelope",
    "Event",
    "InvalidText",
    "Kind",
    "Lane",
    "MedicationAdministered",
    "MedicationDispensed",
    "MedicationOrdered",
    "OrderCancelled",
    "OrderChanged",
    "OrderPlaced",
    "PatientMerged",
    "RecordAccessed",
    "ResultAcknowledged",
    "ResultReported",
    "Transferred",
    "Unrecognized",
]


class Lane(enum.Enum):
    """Clinical-priority lanes, highest first (see DESIGN.md, "Lanes")."""

    CRITICAL = "critical"
    STANDARD = "standard"
    BATCH = "batch"

    @property
    def rank(self) -> int:
        """0 for critical, 1 for standard, 2 for batch: lower is more urgent."""
        return _LANE_RANK[self]


_LANE_RANK = {Lane.CRITICAL: 0, Lane.STANDARD: 1, Lane.BATCH: 2}


class Kind(enum.Enum):
    """The wire format a message arrived in."""

    HL7V2 = "hl7v2"
    FHIR = "fhir"
    COMMAND = "command"  # an operator's or clinician's action recorded by the node itself


# gc=False: the model's Structs hold only strings, numbers, enums and tuples of
# those, so they can never be part of a reference cycle; untracked by the cyclic
# GC, millions of them in memory (a batch, a patient's facts) add nothing to its pauses.


@final
class Coded(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """A coded value (HL7 CE/CWE, FHIR CodeableConcept's first coding)."""

    code: str
    text: str = ""
    system: str = ""


class _Event(msgspec.Struct, frozen=True, omit_defaults=True, tag_field="event", gc=False):
    """Base of every clinical event; `event` names the kind on the wire."""


@final
class DemographicsUpdated(_Event, frozen=True, tag="demographics"):
    """The patient's demographics as the sender now states them."""

    family: str = ""
    given: tuple[str, ...] = ()
    birth_date: str | None = None
    sex: str = ""
    address: str = ""
    deceased: bool | None = None


@final
class Admitted(_Event, frozen=True, tag="admitted"):
    """An encounter began (HL7 A01/A04/A05..., FHIR Encounter in progress)."""

    encounter_id: str = ""
    patient_class: str = ""
    location: str = ""
    admission_type: str = ""
    attending: str = ""
    admitted_at: str | None = None


@final
class Transferred(_Event, frozen=True, tag="transferred"):
    """The patient moved to another location within an encounter."""

    encounter_id: str = ""
    from_location: str = ""
    to_location: str = ""
    transferred_at: str | None = None


@final
class Discharged(_Event, frozen=True, tag="discharged"):
    """An encounter ended."""

    encounter_id: str = ""
    disposition: str = ""
    discharged_at: str | None = None


@final
class EncounterCancelled(_Event, frozen=True, tag="encounter_cancelled"):
    """A previous admission, transfer or discharge was cancelled (A11/A12/A13)."""

    encounter_id: str = ""
    cancels: str = ""


@final
class PatientMerged(_Event, frozen=True, tag="merged"):
    """Two records are one patient: `merged` folds into `surviving`."""

    surviving: str
    merged: str


@final
class OrderPlaced(_Event, frozen=True, tag="order_placed"):
    """A new order (ORC-1 = NW, FHIR ServiceRequest active)."""

    order_id: str
    code: Coded | None = None
    priority: str = ""
    ordered_at: str | None = None


@final
class OrderChanged(_Event, frozen=True, tag="order_changed"):
    """An order was changed or its status moved (ORC-1 = XO/XX/SC...)."""

    order_id: str
    status: str = ""
    code: Coded | None = None
    priority: str = ""


@final
class OrderCancelled(_Event, frozen=True, tag="order_cancelled"):
    """An order was cancelled or discontinued (ORC-1 = CA/OC/DC...)."""

    order_id: str
    reason: str = ""


@final
class ResultReported(_Event, frozen=True, tag="result"):
    """One observation. A correction (`status` = C) names the result it replaces.

    `result_key` identifies the observation across versions (order, code and
    sub-id), so a correction and its original share it; `corrects` is set on
    corrections only.
    """

    result_key: str
    code: Coded
    value: str = ""
    value_type: str = ""
    units: str = ""
    reference_range: str = ""
    abnormal_flags: tuple[str, ...] = ()
    status: str = ""
    effective_at: str | None = None
    order_id: str = ""
    corrects: str | None = None


@final
class MedicationOrdered(_Event, frozen=True, tag="medication_ordered"):
    """A medication order (RDE, FHIR MedicationRequest)."""

    order_id: str
    medication: Coded
    dose: str = ""
    units: str = ""
    priority: str = ""


@final
class MedicationDispensed(_Event, frozen=True, tag="medication_dispensed"):
    """Pharmacy dispensed a medication (RDS)."""

    order_id: str
    medication: Coded
    quantity: str = ""
    units: str = ""
    dispensed_at: str | None = None


@final
class MedicationAdministered(_Event, frozen=True, tag="medication_administered"):
    """A medication or vaccine was given (RAS, VXU, FHIR MedicationAdministration)."""

    order_id: str
    medication: Coded
    dose: str = ""
    units: str = ""
    status: str = ""
    administered_at: str | None = None


@final
class AllergyRecorded(_Event, frozen=True, tag="allergy"):
    """An allergy or intolerance (AL1, FHIR AllergyIntolerance)."""

    allergen: Coded
    category: str = ""
    severity: str = ""
    reactions: tuple[str, ...] = ()


@final
class ChargePosted(_Event, frozen=True, tag="charge"):
    """A financial transaction (DFT FT1, FHIR Claim/ChargeItem/Invoice)."""

    transaction_id: str
    code: Coded | None = None
    transaction_type: str = ""
    quantity: str = ""
    amount: str = ""
    posted_at: str | None = None


@final
class DocumentRecorded(_Event, frozen=True, tag="document"):
    """A clinical document or report (MDM, FHIR DiagnosticReport)."""

    document_id: str
    document_type: str = ""
    status: str = ""
    recorded_at: str | None = None


@final
class ResultAcknowledged(_Event, frozen=True, tag="result_acknowledged"):
    """A clinician acknowledged a critical result (it leaves the open worklist)."""

    result_key: str
    by: str
    acknowledged_at: str
    note: str = ""


@final
class RecordAccessed(_Event, frozen=True, tag="record_accessed"):
    """Someone read a patient's data, or was refused it: the PHI access audit (45 CFR 164.312(b)).

    Not a clinical fact (the record fold passes over it); the read side's
    `phi_access_audit` answers "who looked at my record".

    Attributes:
        user, role: who (a unique user id, and the role they acted in).
        action: what was read (`record`, `log`, `quarantine`, `worklist`...).
        outcome: `allowed` or `denied`.
        at: when (ISO 8601, UTC).
        setting: the session's clinical setting (emergency department, ward...).
        reason: why, where one is given (a break-the-glass reason code).
        device: the workstation the session is bound to.
        detail: why a request was refused, or the note given with a reason.
        severity: `high` for break-the-glass and for repeated failures.
    """

    user: str
    role: str
    action: str
    outcome: str
    at: str
    setting: str = ""
    reason: str = ""
    device: str = ""
    detail: str = ""
    severity: str = ""


@final
class Unrecognized(_Event, frozen=True, tag="unrecognized"):
    """A message, or part of one, the engine keeps but does not interpret."""

    message_type: str
    detail: str = ""


Event = (
    DemographicsUpdated
    | Admitted
    | Transferred
    | Discharged
    | EncounterCancelled
    | PatientMerged
    | OrderPlaced
    | OrderChanged
    | OrderCancelled
    | ResultReported
    | MedicationOrdered
    | MedicationDispensed
    | MedicationAdministered
    | AllergyRecorded
    | ChargePosted
    | DocumentRecorded
    | ResultAcknowledged
    | RecordAccessed
    | Unrecognized
)

# Every event kind by its tag (`result`, `admitted`, ...): what a route's `event_kinds` filter names.
EVENT_KINDS: Final = frozenset(str(cls.__struct_config__.tag) for cls in get_args(Event))


@final
class InvalidText(msgspec.Struct, frozen=True, gc=False):
    """Bytes of a message that were not valid in its undeclared character set, replaced by U+FFFD.

    Attributes:
        charset: the Python codec the message was read in.
        count: how many invalid sequences were replaced.
        first: where the first was (byte offset, segment, field).
    """

    charset: str
    count: int
    first: ErrorLocation


@final
class Envelope(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One accepted message: identity, routing, the original bytes and its events.

    Attributes:
        message_id: stable across redelivery (invariant 4): HL7 sending
            application + facility + MSH-10; FHIR MessageHeader/Bundle id,
            else a hash of the canonical bytes.
        kind: the wire format.
        message_type: `ADT^A01`, `ORU^R01`, or a FHIR resource/bundle type.
        patient: the patient key (`authority|identifier`), None for messages
            about no patient (master files, batch control).
        lane: the lane the classifier chose, and `lane_reason` why.
        received_at: when the node received it (ISO 8601, from the node's clock).
        source: where it came from (`stdin`, `mllp:10.0.0.5:41122`, a file name).
        raw: the original bytes, exactly as received.
        events: the clinical events derived from it, in message order.
        other_patients: further patient keys the message touches (the merged
            record of a merge), so both patients' actors see it.
        non_production: MSH-11 said test/debug/training traffic.
        digest: the content digest (`engine.core.identity`): a duplicate is the same
            `message_id` with the same digest; 0 when unknown.
        invalid_text: bytes that were not valid text and were replaced (the
            original bytes are in `raw`); None when all were valid.
        trace_parent: the W3C `traceparent` of the span that received it
            ("" when tracing is off): a route's delivery continues that trace.
    """

    message_id: str
    kind: Kind
    message_type: str
    patient: str | None
    lane: Lane
    lane_reason: str
    received_at: str
    source: str
    raw: bytes
    events: tuple[Event, ...] = ()
    other_patients: tuple[str, ...] = ()
    non_production: bool = False
    digest: int = 0
    invalid_text: InvalidText | None = None
    trace_parent: str = ""
