"""FHIR R4 REST over a node: reads and searches from the patients' records, and FHIR in (`POST /fhir`).

Reads:
- `GET /fhir/metadata`: the CapabilityStatement (what is below, and no more);
- `GET /fhir/Patient/{id}`, `GET /fhir/Patient?identifier=system|value` (or `_id`);
- `GET /fhir/{Type}?patient={id}&code=&date=` for Observation, Encounter,
  MedicationRequest, MedicationAdministration and AllergyIntolerance;
- `GET /fhir/Patient/{id}/$everything`.
Every read takes `_as-of=TIME` (the record as it stood at that clinical
moment) and `_as-known-at=TIME` (what Vigil had been told by then): the
record's two timelines, which FHIR's own `_at`/`_since` do not separate.
Searches page with `_count` and `_offset`.

Each read needs a bearer token whose scopes allow reading the type, and is
audited (one event per patient shown) before the answer leaves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final, final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from actors import RecordView
from engine.core.fhir import Json
from engine.web.answers import fhir_json, operation_outcome
from engine.web.encoded import Encoded, EncodedResources
from engine.web.fhir_query import COUNT_DEFAULT, QueryError, SearchQuery, parse_query
from engine.web.gate import Gate
from engine.web.resources import READABLE_TYPES, key_of_patient_id, resources_of

__all__ = ["READ_FAULTS", "FhirReads", "RecordReader", "RecordUnavailableError"]

# A patient's record at a moment of both timelines: (key, as known at, as of) -> its view.
RecordReader = Callable[[str, str | None, str | None], Awaitable[RecordView]]

_SEARCH_PARAMETERS: Final = {
    "Patient": {"identifier": "token", "_id": "token"},
    "Observation": {"patient": "reference", "code": "token", "date": "date"},
    "Encounter": {"patient": "reference", "date": "date"},
    "MedicationRequest": {"patient": "reference", "code": "token"},
    "MedicationAdministration": {"patient": "reference", "code": "token", "date": "date"},
    "AllergyIntolerance": {"patient": "reference", "code": "token"},
}
_EVERYTHING: Final = {"_count": "number", "_offset": "number"}


class RecordUnavailableError(Exception):
    """The record cannot be read here now (restarting, or another node serves its partition); retry or go there."""


async def _bad_query(_request: Request, exc: Exception) -> Response:
    return operation_outcome(400, str(exc))


async def _unavailable(_request: Request, exc: Exception) -> Response:
    return operation_outcome(503, str(exc), headers={"Retry-After": "1"})


# How a read's faults are answered (the app's exception handlers): each handler just raises.
READ_FAULTS: Final = {QueryError: _bad_query, RecordUnavailableError: _unavailable}


@final
class FhirReads:
    """The read side of the FHIR API, over a record reader and the gate."""

    def __init__(self, read: RecordReader, gate: Gate, *, software: str, version: str, kept_observations: int) -> None:
        self._read = read
        self._gate = gate
        self._encoded = EncodedResources(kept_observations)
        self._software = software
        self._version = version

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/fhir/metadata", self._metadata, methods=["GET"]),
            Route("/fhir/Patient/{rid}/$everything", self._everything, methods=["GET"]),
            Route("/fhir/{rtype}/{rid}", self._read_one, methods=["GET"]),
            Route("/fhir/{rtype}", self._search, methods=["GET"]),
        ]

    # -- requests -----------------------------------------------------------------------------

    async def _metadata(self, request: Request) -> Response:
        return fhir_json(self._capability(str(request.base_url)))

    async def _read_one(self, request: Request) -> Response:
        rtype, rid = request.path_params["rtype"], request.path_params["rid"]
        if rtype != "Patient":
            return _unknown_type(rtype) or operation_outcome(
                404, f"{rtype} is read through a search with patient= (GET /fhir/{rtype}?patient=...)"
            )
        key = key_of_patient_id(rid)
        if key is None:
            return operation_outcome(404, "no Patient with that id")
        query = parse_query(list(request.query_params.multi_items()), {})
        view = await self._view(request, "Patient", key, query)
        if view.facts == 0:
            return operation_outcome(404, "no Patient with that id")
        return fhir_json(resources_of(view, "Patient")[0])

    async def _search(self, request: Request) -> Response:
        rtype = request.path_params["rtype"]
        unknown = _unknown_type(rtype)
        if unknown is not None:
            return unknown
        query = parse_query(list(request.query_params.multi_items()), _SEARCH_PARAMETERS[rtype])
        key = _patient_of(rtype, request, query)
        view = await self._view(request, rtype, key, query)
        found = self._encoded.of(view, rtype) if view.facts else []
        if query.filters:
            found = [e for e in found if query.matches_facets(e.facets)]
        return fhir_json(_searchset(request, found, query))

    async def _everything(self, request: Request) -> Response:
        key = key_of_patient_id(request.path_params["rid"])
        if key is None:
            return operation_outcome(404, "no Patient with that id")
        query = parse_query(list(request.query_params.multi_items()), _EVERYTHING)
        view = await self._view(request, "*", key, query)
        if view.facts == 0:
            return operation_outcome(404, "no Patient with that id")
        found = [e for rtype in READABLE_TYPES for e in self._encoded.of(view, rtype)]
        return fhir_json(_searchset(request, found, query))

    # -- the work -------------------------------------------------------------------------------

    async def _view(self, request: Request, rtype: str, key: str, query: SearchQuery) -> RecordView:
        """The record, once the client may see it and the look is in the audit trail."""
        await self._gate.allow(request, rtype, "read", patients=[key], action=f"fhir_read:{rtype}")
        return await self._read(key, query.known_at, query.as_of)

    def _capability(self, base: str) -> Json:
        resources = [
            {
                "type": rtype,
                "interaction": [{"code": "search-type"}] + ([{"code": "read"}] if rtype == "Patient" else []),
                "searchParam": [
                    {"name": name, "type": kind}
                    for name, kind in {**params, "_as-of": "date", "_as-known-at": "date"}.items()
                ],
                **(
                    {"operation": [{"name": "everything", "definition": _EVERYTHING_DEFINITION}]}
                    if rtype == "Patient"
                    else {}
                ),
            }
            for rtype, params in _SEARCH_PARAMETERS.items()
        ]
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-12-06",
            "kind": "instance",
            "software": {"name": self._software, "version": self._version},
            "implementation": {"description": "Vigil node", "url": base.rstrip("/") + "/fhir"},
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "documentation": _REST_DOCUMENTATION,
                    "security": {
                        "service": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                        "code": "SMART-on-FHIR",
                                    }
                                ]
                            }
                        ],
                        "description": "Bearer tokens of registered clients, with system/ scopes (vigil client add)",
                    },
                    "resource": resources,
                    "interaction": [{"code": "transaction"}, {"code": "batch"}],
                }
            ],
        }


_MATCH: Final = {"mode": "match"}  # shared by every entry: encoded, never changed
_EVERYTHING_DEFINITION: Final = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
_REST_DOCUMENTATION: Final = (
    "Searches run within one patient (patient= is required). Unknown search parameters are refused. "
    "_as-of=TIME reads the record as it stood at that clinical moment; _as-known-at=TIME as Vigil knew it then. "
    "POST /fhir takes a transaction or batch Bundle, or one resource; POST /hl7v2 takes one HL7 v2 message."
)


def _unknown_type(rtype: str) -> Response | None:
    if rtype in _SEARCH_PARAMETERS:
        return None
    return operation_outcome(404, f"this server does not serve {rtype} (it serves {', '.join(_SEARCH_PARAMETERS)})")


def _patient_of(rtype: str, request: Request, query: SearchQuery) -> str:
    """The one patient a search is about (a Patient search names it by identifier or id)."""
    if rtype != "Patient":
        if query.patient is None:
            raise QueryError(f"a {rtype} search needs patient= (searches run within one patient's record)")
        return query.patient
    params = request.query_params
    if "_id" in params:
        key = key_of_patient_id(params["_id"])
        if key is None:
            raise QueryError(f"_id: {params['_id']!r} is not a Patient id")
        return key
    if "identifier" in params:
        system, bar, value = params["identifier"].rpartition("|")
        if not value:
            raise QueryError("identifier: give system|value (or |value for an identifier with no authority)")
        return f"{system}|{value}" if bar else f"|{value}"
    raise QueryError("a Patient search needs identifier=system|value or _id=")


def _searchset(request: Request, found: Sequence[Encoded], query: SearchQuery) -> Json:
    """A page of a searchset Bundle, with its self, next and previous links."""
    base = str(request.base_url).rstrip("/") + "/fhir"
    page = found[query.offset : query.offset + query.count]
    links = [{"relation": "self", "url": str(request.url)}]
    if query.offset + query.count < len(found):
        links.append({"relation": "next", "url": _page_url(request, query.offset + query.count, query.count)})
    if query.offset > 0:
        links.append(
            {"relation": "previous", "url": _page_url(request, max(0, query.offset - query.count), query.count)}
        )
    bundle: Json = {"resourceType": "Bundle", "type": "searchset", "total": len(found), "link": links}
    if page:  # FHIR allows no empty array
        bundle["entry"] = [{"fullUrl": f"{base}/{e.rtype}/{e.rid}", "resource": e.raw, "search": _MATCH} for e in page]
    return bundle


def _page_url(request: Request, offset: int, count: int) -> str:
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_offset", "_count")]
    params += [("_count", str(count or COUNT_DEFAULT)), ("_offset", str(offset))]
    return str(request.url.replace(query=urlencode(params)))
