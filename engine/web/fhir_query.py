"""A FHIR search's parameters, read strictly, and the filter they make. Pure: no I/O.

Searches run within one patient's record (`patient=` is required): the
record lives with its patient's actor. Supported: `code` (a token,
`[system|]code`, commas for any of several), `date` (FHIR's prefixes `eq`,
`ne`, `gt`, `ge`, `lt`, `le`, at the precision given; repeat it for a
range), `_count` and `_offset` (paging), and Vigil's bitemporal reads
`_as-of` and `_as-known-at`. A parameter this server does not know is
refused, not ignored: a misspelt `code` must not return every result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple, final

import msgspec

from actors import parse_moment
from engine.core.fhir import Json
from engine.web.resources import key_of_patient_id

__all__ = ["COUNT_DEFAULT", "COUNT_MAX", "Facets", "QueryError", "SearchQuery", "facets_of", "moment_of", "parse_query"]

COUNT_DEFAULT: Final = 100
COUNT_MAX: Final = 1000
_PREFIXES: Final = ("eq", "ne", "gt", "ge", "lt", "le")
_DATE: Final = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(T.+)?)?)?")
_COMMON: Final = frozenset({"_as-of", "_as-known-at", "_count", "_offset", "_format"})
# Where each type keeps the moment `date=` compares.
_MOMENTS: Final = {
    "Observation": ("effectiveDateTime",),
    "Encounter": ("period", "start"),
    "MedicationAdministration": ("effectiveDateTime",),
    "MedicationRequest": ("authoredOn",),
    "AllergyIntolerance": ("onsetDateTime",),
}


class QueryError(ValueError):
    """A search parameter this server cannot honour; the message names it."""


@final
class DateBound(msgspec.Struct, frozen=True):
    prefix: str
    low: datetime  # the value's first moment at its precision
    high: datetime  # the first moment after it

    def holds(self, moment: datetime) -> bool:
        inside = self.low <= moment < self.high
        return {
            "eq": inside,
            "ne": not inside,
            "gt": moment >= self.high,
            "ge": moment >= self.low,
            "lt": moment < self.low,
            "le": moment < self.high,
        }[self.prefix]


@final
class SearchQuery(msgspec.Struct, frozen=True):
    """A search within one patient: its filters, its page, and the moment asked about."""

    patient: str | None = None
    codes: tuple[tuple[str | None, str], ...] = ()  # (system or None for any, code)
    dates: tuple[DateBound, ...] = ()
    count: int = COUNT_DEFAULT
    offset: int = 0
    as_of: str | None = None
    known_at: str | None = None

    @property
    def filters(self) -> bool:
        """True when the search narrows the record (a code or a date), not just pages it."""
        return bool(self.codes or self.dates)

    def matches(self, resource_type: str, resource: Json) -> bool:
        return self.matches_facets(facets_of(resource_type, resource))

    def matches_facets(self, facets: Facets) -> bool:
        return self._code_matches(facets.codings) and self._date_matches(facets.moment)

    def _code_matches(self, codings: tuple[tuple[str, str], ...]) -> bool:
        if not self.codes:
            return True
        return any(
            have == code and (system is None or have_system == system)
            for have_system, have in codings
            for system, code in self.codes
        )

    def _date_matches(self, moment: datetime | None) -> bool:
        if not self.dates:
            return True
        return moment is not None and all(bound.holds(moment) for bound in self.dates)


class Facets(NamedTuple):
    """What a search compares in a resource: its codings (system, code) and its moment (UTC), taken out once."""

    codings: tuple[tuple[str, str], ...]
    moment: datetime | None


def facets_of(resource_type: str, resource: Json) -> Facets:
    concept = resource.get("code") or resource.get("medicationCodeableConcept")
    codings = concept.get("coding", []) if isinstance(concept, dict) else []
    pairs = tuple(
        (str(c.get("system", "")), c["code"]) for c in codings if isinstance(c, dict) and isinstance(c.get("code"), str)
    )
    return Facets(pairs, moment_of(resource_type, resource))


def moment_of(resource_type: str, resource: Json) -> datetime | None:
    """The moment `date=` compares for a resource of this type, in UTC; None when it has none."""
    value: object = resource
    for step in _MOMENTS.get(resource_type, ()):
        value = value.get(step) if isinstance(value, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return _bound("eq", value).low
    except QueryError:
        return None


def parse_query(params: Sequence[tuple[str, str]], allowed: Mapping[str, str]) -> SearchQuery:
    """A search from its query string's pairs; `allowed` names the search parameters of the type.

    Raises:
        QueryError: an unknown or repeated parameter, or a value that is not of its kind.
    """
    fields: dict[str, object] = {}
    dates: list[DateBound] = []
    seen: set[str] = set()
    for name, value in params:
        if name not in allowed and name not in _COMMON:
            known = ", ".join(sorted({*allowed, *_COMMON}))
            raise QueryError(f"unknown search parameter {name!r} (this server knows: {known})")
        if name in seen and name != "date":
            raise QueryError(f"{name} is given twice: give it once (commas for several codes)")
        seen.add(name)
        if name == "date":
            dates.append(_date_bound(value))
        else:
            fields.update(_one(name, value))
    return msgspec.convert({**fields, "dates": tuple(dates)}, SearchQuery)


def _one(name: str, value: str) -> dict[str, object]:
    if name == "patient":
        rid = value.removeprefix("Patient/")
        key = key_of_patient_id(rid)
        if key is None:
            raise QueryError(f"patient: {value!r} is not a Patient id")
        return {"patient": key}
    if name == "code":
        codes = []
        for token in value.split(","):
            system, bar, code = token.rpartition("|")
            if not code:
                raise QueryError(f"code: {token!r} has no code ([system|]code)")
            codes.append((system if bar else None, code))
        return {"codes": tuple(codes)}
    if name in ("_count", "_offset"):
        return {name.lstrip("_"): _whole(name, value, 1 if name == "_count" else 0)}
    if name in ("_as-of", "_as-known-at"):
        try:
            moment = parse_moment(value)
        except ValueError as exc:
            raise QueryError(f"{name}: {exc}") from None
        return {"as_of" if name == "_as-of" else "known_at": moment}
    return {}  # _format: the answer is JSON whatever is asked


def _whole(name: str, value: str, least: int) -> int:
    if not value.isdigit() or int(value) < least:
        raise QueryError(f"{name}: {value!r} is not a whole number of at least {least}")
    return min(int(value), COUNT_MAX) if name == "_count" else int(value)


def _date_bound(value: str) -> DateBound:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    return _bound(prefix, value[2:] if value[:2] in _PREFIXES else value)


def _bound(prefix: str, text: str) -> DateBound:
    match = _DATE.fullmatch(text.strip())
    if match is None:
        raise QueryError(f"date: {text!r} is not a FHIR date or dateTime (2026-12-05, 2026-12-05T08:00:00Z)")
    year, month, day, time = match.groups()
    try:
        if time:
            low = datetime.fromisoformat(text.strip())
            low = low if low.tzinfo is not None else low.replace(tzinfo=UTC)
            return DateBound(prefix, low.astimezone(UTC), low.astimezone(UTC) + timedelta(seconds=1))
        if day:
            low = datetime(int(year), int(month), int(day), tzinfo=UTC)
            return DateBound(prefix, low, low + timedelta(days=1))
        if month:
            low = datetime(int(year), int(month), 1, tzinfo=UTC)
            high = datetime(int(year) + int(month) // 12, int(month) % 12 + 1, 1, tzinfo=UTC)
            return DateBound(prefix, low, high)
        return DateBound(prefix, datetime(int(year), 1, 1, tzinfo=UTC), datetime(int(year) + 1, 1, 1, tzinfo=UTC))
    except ValueError as exc:
        raise QueryError(f"date: {text!r}: {exc}") from None
