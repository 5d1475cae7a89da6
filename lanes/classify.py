"""Lane classification: which lane a message belongs to, and why.

HL7 v2 is classified from raw bytes (`engine.core.hl7.scan`): the header and the
few segments that carry priority (PV1, TQ1, ORC, OBR, OBX) are found by byte
search and only those lines are split, so a flood is sorted before it costs a
parse. FHIR is classified from decoded resources (msgspec decoding is already
cheaper than any rule here).

Precedence, highest first:
1. non-production traffic (MSH-11, FHIR test tags) goes to batch, flagged:
   a test message must never take critical capacity;
2. anything critical (STAT priority, a critical flag, a correction, an
   emergency admission) goes to critical, even inside a batch file or bundle —
   a critical potassium does not wait because of how it was packaged;
3. batch files, billing and master files go to batch;
4. everything else is standard.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

import msgspec

from engine.core.fhir import (
    DiagnosticReport,
    Encounter,
    MedicationRequest,
    Meta,
    Observation,
    RawResource,
    Resource,
    ServiceRequest,
)
from engine.core.hl7 import Header, read_header, segment_fields
from engine.core.model import Lane
from lanes.rules import ClassificationRules

__all__ = ["Classification", "Classifier"]

_PRIORITY_SEGMENTS = frozenset({b"PV1", b"TQ1", b"ORC", b"OBR", b"OBX"})
_ACTIVE_ENCOUNTER = frozenset({"planned", "arrived", "triaged", "in-progress"})


@final
class Classification(msgspec.Struct, frozen=True):
    """The lane chosen for a message and the rule that chose it."""

    lane: Lane
    reason: str
    non_production: bool = False


def _codes(values: Iterable[str]) -> frozenset[bytes]:
    return frozenset(v.encode() for v in values)


@final
class Classifier:
    """Applies `ClassificationRules`; build once, call for every message."""

    def __init__(self, rules: ClassificationRules | None = None) -> None:
        r = rules if rules is not None else ClassificationRules()
        self.rules = r
        self._critical_flags = _codes(r.critical_abnormal_flags + r.local_critical_flags)
        self._stat = _codes(r.stat_priorities)
        self._corrections = _codes(r.correction_statuses)
        self._emergency_types = _codes(r.emergency_admission_types)
        self._emergency_events = _codes(r.emergency_admission_events)
        self._batch_types = _codes(t for t in r.batch_message_types if "^" in t)
        self._batch_codes = _codes(t for t in r.batch_message_types if "^" not in t)
        self._non_production = _codes(r.non_production_processing_ids)
        self._fhir_critical = frozenset(r.fhir_critical_interpretations)
        self._fhir_tests = frozenset(r.fhir_test_tags)

    def classify_hl7(self, raw: bytes, *, in_batch: bool = False) -> Classification:
        """Classify one HL7 v2 message from its bytes.

        Raises:
            HeaderError: the bytes do not start with an MSH segment.
        """
        h = read_header(raw)
        processing = h.get(11)
        if processing in self._non_production:
            return Classification(Lane.BATCH, f"non-production traffic (MSH-11={processing.decode()})", True)
        code, event = h.get(9, 1), h.get(9, 2)
        reason = self._critical_hl7(raw, h, code, event)
        if reason is not None:
            return Classification(Lane.CRITICAL, reason)
        mtype = code + b"^" + event if event else code
        if in_batch:
            return Classification(Lane.BATCH, "batch file (FHS/BHS envelope)")
        if code in self._batch_codes or mtype in self._batch_types:
            return Classification(Lane.BATCH, f"batch message type (MSH-9={_text(mtype)})")
        return Classification(Lane.STANDARD, f"clinical traffic (MSH-9={_text(mtype)})")

    def _critical_hl7(self, raw: bytes, h: Header, code: bytes, event: bytes) -> str | None:
        check_pv1 = code == b"ADT" and event in self._emergency_events
        for seg_id, f in segment_fields(raw, _PRIORITY_SEGMENTS, h.field):
            if seg_id == b"OBX":
                reason = self._critical_obx(f, h.component, h.repetition)
            elif seg_id == b"OBR":
                reason = self._critical_obr(f, h.component, h.repetition)
            elif seg_id == b"ORC":
                reason = (
                    "STAT order (ORC-7.6)"
                    if len(f) > 7 and self._stat_timing(f[7], h.component, h.repetition)
                    else None
                )
            elif seg_id == b"TQ1":
                stat = len(f) > 9 and f[9].split(h.component, 1)[0] in self._stat
                reason = "STAT order (TQ1-9)" if stat else None
            else:  # PV1
                emergency = check_pv1 and len(f) > 4 and f[4] in self._emergency_types
                reason = f"emergency admission (PV1-4={_text(f[4])})" if emergency else None
            if reason is not None:
                return reason
        return None

    def _critical_obx(self, f: list[bytes], comp: bytes, rep: bytes) -> str | None:
        if len(f) > 8 and f[8]:
            for flag in f[8].split(rep):
                if flag.split(comp, 1)[0] in self._critical_flags:
                    return f"critical result (OBX-8={_text(flag)})"
        if len(f) > 11 and f[11] in self._corrections:
            return f"result correction (OBX-11={_text(f[11])})"
        return None

    def _critical_obr(self, f: list[bytes], comp: bytes, rep: bytes) -> str | None:
        n = len(f)
        if n > 5 and f[5] in self._stat:
            return f"STAT order (OBR-5={_text(f[5])})"
        if n > 27 and self._stat_timing(f[27], comp, rep):
            return "STAT order (OBR-27.6)"
        if n > 25 and f[25] in self._corrections:
            return f"result correction (OBR-25={_text(f[25])})"
        return None

    def _stat_timing(self, value: bytes, comp: bytes, rep: bytes) -> bool:
        """True when a TQ field (ORC-7, OBR-27) has priority component 6 = STAT."""
        if not value:
            return False
        for timing in value.split(rep):
            parts = timing.split(comp)
            if len(parts) > 5 and parts[5] in self._stat:
                return True
        return False

    def classify_fhir(self, resources: Iterable[Resource], metas: Iterable[Meta | None] = ()) -> Classification:
        """Classify a FHIR document: the most urgent of its resources wins.

        `metas` adds the enclosing Bundle's meta (for test tags).
        """
        best: Classification | None = None
        resources = list(resources)
        for meta in [*metas, *(getattr(r, "meta", None) for r in resources)]:
            if meta is not None and any(c.code in self._fhir_tests for c in (*meta.tag, *meta.security)):
                return Classification(Lane.BATCH, "non-production traffic (meta.tag=HTEST)", True)
        for resource in resources:
            found = self._classify_resource(resource)
            if best is None or found.lane.rank < best.lane.rank:
                best = found
        return best if best is not None else Classification(Lane.STANDARD, "FHIR document without resources")

    def _classify_resource(self, r: Resource) -> Classification:
        rules = self.rules
        rtype = r.resource_type if isinstance(r, RawResource) else type(r).__name__
        if rtype in rules.fhir_batch_resources:
            return Classification(Lane.BATCH, f"billing resource ({rtype})")
        if isinstance(r, ServiceRequest | MedicationRequest) and r.priority in rules.fhir_stat_priorities:
            return Classification(Lane.CRITICAL, f"STAT order ({rtype}.priority={r.priority})")
        if isinstance(r, Observation):
            for concept in r.interpretation:
                for coding in concept.coding:
                    if coding.code in self._fhir_critical:
                        return Classification(
                            Lane.CRITICAL, f"critical result (Observation.interpretation={coding.code})"
                        )
        if isinstance(r, Observation | DiagnosticReport) and r.status in rules.fhir_correction_statuses:
            return Classification(Lane.CRITICAL, f"result correction ({rtype}.status={r.status})")
        if (
            isinstance(r, Encounter)
            and r.class_ is not None
            and r.class_.code in rules.fhir_emergency_classes
            and r.status in _ACTIVE_ENCOUNTER
        ):
            return Classification(Lane.CRITICAL, f"emergency admission (Encounter.class={r.class_.code})")
        return Classification(Lane.STANDARD, f"clinical traffic ({rtype})")


def _text(value: bytes) -> str:
    return value.decode("latin-1")
