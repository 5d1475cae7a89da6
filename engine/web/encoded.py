"""A record's resources as encoded FHIR JSON, each with what a search compares; Observations kept across reads.

A search or `$everything` pages through a record's resources. Made afresh per
read, a 10,000-result record's Observations were 72% of the node's time per
`$everything` (py-spy under `bench_http`): a dict per result, per read, for a
page of 1,000. Here each result's Observation is made and encoded once per
version and kept, so a read of a record that gained one result since the last
read makes one Observation, and a Bundle embeds the kept bytes as they are.

What an Observation is made from: the patient, the result's current version
(an event of the record, the same object in every view folded from that
record), its clinical time and its version count. The kept entry is found by
the event's identity and used only when all four are the same; it holds the
event, so the identity cannot pass to another object while it is kept. As-of
reads (an earlier version current) get entries of their own. At most
`kept_max` Observations are kept, the least recently read dropped first.

Not thread-safe: used on the node's event loop only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, NamedTuple, final

import msgspec

from actors import RecordView, ResultView
from engine.core.fhir import Json
from engine.core.model import ResultReported
from engine.web.fhir_query import Facets, facets_of
from engine.web.resources import observation, patient_reference, resources_of

__all__ = ["Encoded", "EncodedResources"]

_ENCODER: Final = msgspec.json.Encoder()


class Encoded(NamedTuple):
    """One resource, ready for a Bundle: its type and id, what a search compares, and its JSON."""

    rtype: str
    rid: str
    facets: Facets
    raw: msgspec.Raw


class _Kept(NamedTuple):
    event: ResultReported  # held, so that no other object takes its id() while this is kept
    patient: str
    versions: int
    effective_at: str
    encoded: Encoded


@final
class EncodedResources:
    """The resources of records, encoded; Observations kept (at most `kept_max`, least recently read out first)."""

    def __init__(self, kept_max: int) -> None:
        self._kept: OrderedDict[int, _Kept] = OrderedDict()
        self._kept_max = kept_max

    def __len__(self) -> int:
        return len(self._kept)

    def of(self, view: RecordView, rtype: str) -> list[Encoded]:
        """The record's resources of one type (`READABLE_TYPES`), in the record's order."""
        if rtype != "Observation":
            return [encoded(rtype, resource) for resource in resources_of(view, rtype)]
        subject = patient_reference(view.patient)
        return [self._observation(view.patient, subject, result) for result in view.results]

    def _observation(self, patient: str, subject: Json, result: ResultView) -> Encoded:
        event = result.current
        key = id(event)
        kept = self._kept.get(key)
        if (
            kept is not None
            and kept.event is event
            and kept.patient == patient
            and kept.versions == len(result.versions)
            and kept.effective_at == result.effective_at
        ):
            self._kept.move_to_end(key)
            return kept.encoded
        made = encoded("Observation", observation(patient, subject, result))
        self._kept[key] = _Kept(event, patient, len(result.versions), result.effective_at, made)
        self._kept.move_to_end(key)  # a replaced entry (another version, another patient) is fresh too
        if len(self._kept) > self._kept_max:
            self._kept.popitem(last=False)
        return made


def encoded(rtype: str, resource: Json) -> Encoded:
    return Encoded(rtype, str(resource["id"]), facets_of(rtype, resource), msgspec.Raw(_ENCODER.encode(resource)))
