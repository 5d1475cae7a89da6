"""Audit events: how an access (or a refusal) is written to the log, and read back as FHIR AuditEvent.

Pure. Every access to PHI, every refusal and every login, lock and account
change is a `RecordAccessed` event in an envelope of `Kind.COMMAND`, appended
to the tamper-evident log like any message (hash chain, keyed checkpoints).
Events with no patient (a failed login) carry an empty patient key: the log
keeps them, no patient actor or read model sees them.

`fhir_audit_event` renders one as a FHIR R4 AuditEvent in the shape IHE ATNA
(RESTful ATNA) uses: DICOM event type codes, the user as the requesting
agent, the node as the source, the patient as the entity, and for
break-the-glass the purpose of use `BTG`.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec

from engine.core.model import Envelope, Kind, Lane, RecordAccessed

__all__ = ["AUDIT_MESSAGE_TYPE", "audit_envelope", "fhir_audit_event"]

AUDIT_MESSAGE_TYPE: Final = "AUDIT^ACCESS"
_DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
_ACT_REASON: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"

# action -> (DICOM event type, its display, FHIR AuditEvent.action: C R U D E)
_TYPES: Final[dict[str, tuple[str, str, str]]] = {
    "login": ("110114", "User Authentication", "E"),
    "logout": ("110114", "User Authentication", "E"),
    "lock": ("110114", "User Authentication", "E"),
    "unlock": ("110114", "User Authentication", "E"),
    "user_add": ("110137", "User Security Attributes Changed", "C"),
    "user_disable": ("110137", "User Security Attributes Changed", "U"),
    "user_roles": ("110136", "Security Roles Changed", "U"),
    "secrets_change": ("110137", "User Security Attributes Changed", "U"),
    "secrets_reset": ("110137", "User Security Attributes Changed", "U"),
    "audit_read": ("110101", "Audit Log Used", "R"),
    "audit_review": ("110101", "Audit Log Used", "U"),
    "acknowledge": ("110110", "Patient Record", "U"),
    "break_glass": ("110113", "Security Alert", "E"),
}
_SUBTYPES: Final = {"login": ("110122", "Login"), "unlock": ("110122", "Login"), "logout": ("110123", "Logout")}


def audit_envelope(event: RecordAccessed, patient: str, *, node: str) -> Envelope:
    """The log envelope of one audit event (a fresh id: every access is its own record)."""
    audit_id = uuid.uuid4().hex
    raw = msgspec.json.encode({"audit": audit_id, "patient": patient, "event": event})
    return Envelope(
        f"audit:{audit_id}",
        Kind.COMMAND,
        AUDIT_MESSAGE_TYPE,
        patient,
        Lane.STANDARD,
        "access audit",
        event.at,
        node,
        raw,
        (event,),
    )


def fhir_audit_event(lsn: int, recorded_at: str, patient: str, event: RecordAccessed, *, node: str) -> dict[str, Any]:
    """A FHIR R4 AuditEvent (IHE ATNA) for one audit record of the log."""
    code, display, action = _TYPES.get(event.action, ("110110", "Patient Record", "R"))
    doc: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"{node}-{lsn}",
        "type": {"system": _DCM, "code": code, "display": display},
        "action": action,
        "recorded": event.at or recorded_at,
        "outcome": "0" if event.outcome == "allowed" else "4",
        "agent": [
            {
                "type": {"text": event.setting} if event.setting else {"text": "unknown setting"},
                "who": {"identifier": {"value": event.user or "unknown"}},
                "requestor": True,
                "role": [{"text": event.role}] if event.role else [],
                **({"network": {"address": event.device, "type": "1"}} if event.device else {}),
            }
        ],
        "source": {
            "site": node,
            "observer": {"display": node},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "extension": [{"url": "https://vigil.example/fhir/StructureDefinition/log-lsn", "valueInteger": lsn}],
    }
    if event.action in _SUBTYPES:
        sub_code, sub_display = _SUBTYPES[event.action]
        doc["subtype"] = [{"system": _DCM, "code": sub_code, "display": sub_display}]
    else:
        doc["subtype"] = [{"system": "https://vigil.example/fhir/CodeSystem/audit-action", "code": event.action}]
    if event.outcome != "allowed" and event.detail:
        doc["outcomeDesc"] = event.detail
    if event.reason:
        purpose = [{"system": _ACT_REASON, "code": "BTG", "display": "break the glass"}]
        if event.reason == "emergency_treatment":
            purpose.append({"system": _ACT_REASON, "code": "ETREAT", "display": "emergency treatment"})
        doc["purposeOfEvent"] = [{"coding": purpose, "text": event.reason}]
    if patient:
        doc["entity"] = [
            {
                "what": {"identifier": {"value": patient}},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
        ]
    return doc
