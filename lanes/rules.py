"""The classification rules, as configured in `config.toml` under `[lanes.rules]`.

Defaults are DESIGN.md's lane table. Codes are compared exactly as they
appear in the message (HL7 codes are case-sensitive), except FHIR codes,
which FHIR defines in lower case.
"""

from __future__ import annotations

from typing import final

import msgspec

__all__ = ["ClassificationRules"]


@final
class ClassificationRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which messages go to which lane.

    Attributes:
        critical_abnormal_flags: OBX-8 values that make a result critical.
        local_critical_flags: a site's own OBX-8 codes for critical values.
        stat_priorities: priority codes meaning STAT (TQ1-9, ORC-7.6,
            OBR-27.6, OBR-5).
        correction_statuses: OBX-11 / OBR-25 values that mark a correction or
            a retraction. Every correction is critical: a correction may be the
            one that takes back a critical value, and the classifier cannot see
            the original.
        emergency_admission_types: PV1-4 values for an emergency admission.
        emergency_admission_events: the ADT events that admit (others, such as
            A08 updates, are routine even for an emergency patient).
        batch_message_types: MSH-9 codes for the batch lane; `DFT^P03`
            matches that event only, `MFN` every MFN event.
        non_production_processing_ids: MSH-11 values for test, debug and
            training traffic: batch lane, flagged, never critical.
        fhir_stat_priorities: FHIR `priority` codes meaning STAT.
        fhir_critical_interpretations: Observation.interpretation codes.
        fhir_correction_statuses: Observation/DiagnosticReport statuses of a
            correction.
        fhir_emergency_classes: Encounter.class codes of an emergency visit.
        fhir_batch_resources: resource types for the batch lane.
        fhir_test_tags: meta.tag / meta.security codes marking test data.
    """

    critical_abnormal_flags: tuple[str, ...] = ("HH", "LL", "AA")
    local_critical_flags: tuple[str, ...] = ()
    stat_priorities: tuple[str, ...] = ("S",)
    correction_statuses: tuple[str, ...] = ("C", "W")
    emergency_admission_types: tuple[str, ...] = ("E",)
    emergency_admission_events: tuple[str, ...] = ("A01", "A04", "A05")
    batch_message_types: tuple[str, ...] = ("DFT^P03", "BAR^P01", "MFN")
    non_production_processing_ids: tuple[str, ...] = ("T", "D", "N", "V")
    fhir_stat_priorities: tuple[str, ...] = ("stat",)
    fhir_critical_interpretations: tuple[str, ...] = ("HH", "LL", "AA")
    fhir_correction_statuses: tuple[str, ...] = ("corrected", "amended")
    fhir_emergency_classes: tuple[str, ...] = ("EMER",)
    fhir_batch_resources: tuple[str, ...] = ("Claim", "ChargeItem", "Account", "Invoice")
    fhir_test_tags: tuple[str, ...] = ("HTEST",)
