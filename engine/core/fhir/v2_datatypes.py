"""HL7 v2 data types to FHIR R4 JSON elements (the v2-to-FHIR guide's data type maps).

Each function reads one field of a parsed segment and returns the FHIR
element as a JSON-ready dict, or None when the field says nothing, so a
resource never carries an empty element.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation

from engine.core.fhir.v2_vocabulary import NAME_USE, V2_TABLE, code_system
from engine.core.hl7 import Segment, to_iso

__all__ = [
    "Json",
    "address",
    "codeable",
    "date",
    "date_time",
    "decimal",
    "entity_identifier",
    "fhir_string",
    "human_name",
    "identifier",
    "pruned",
    "telecom",
]

Json = dict[str, object]

_TIME = re.compile(r"(\d{2})(?::(\d{2}))?(?::(\d{2})(\.\d+)?)?([+-]\d{2}:\d{2})?")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def pruned(element: Mapping[str, object]) -> Json:
    """The element without its empty members (None, "", [], {}): FHIR forbids empty elements.

    Text is made a valid FHIR string: no control characters but tab and line
    ends, no white space around it (a value that is only white space is none).
    """
    out: Json = {}
    for key, value in element.items():
        kept = fhir_string(value) if isinstance(value, str) else value
        if kept is not None and kept not in ("", [], {}):
            out[key] = kept
    return out


def fhir_string(text: str) -> str:
    """`text` as FHIR allows a string: control characters other than tab, CR and LF dropped, then stripped."""
    if not text.isprintable():
        text = "".join(c for c in text if c in "\t\r\n" or unicodedata.category(c) != "Cc")
    return text.strip()


def decimal(text: str | None) -> Decimal | None:
    """A v2 NM as a decimal that keeps its written precision (`6.90` stays `6.90`), or None."""
    if not text or _NUMBER.fullmatch(text.strip()) is None:
        return None
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        return None


def date(value: str | None) -> str | None:
    """A v2 DT/DTM as a FHIR `date` (year, month or day precision)."""
    return to_iso(value[:8] if value else None)


def date_time(value: str | None, zone: tzinfo) -> str | None:
    """A v2 DTM as a FHIR `dateTime`.

    FHIR wants seconds and an offset once there is a time of day: a missing
    minute or second is zero, and a time sent without an offset is read in
    `zone` (the sender's clock, from the route's settings), daylight saving included.
    """
    iso = to_iso(value)
    if iso is None or "T" not in iso:
        return iso
    day, _, time = iso.partition("T")
    found = _TIME.fullmatch(time)
    if found is None:
        return day
    hour, minute, second, fraction, offset = found.groups()
    minute, second, fraction = minute or "00", second or "00", fraction or ""
    if offset is None:
        local = datetime.fromisoformat(f"{day}T{hour}:{minute}:{second}").replace(tzinfo=zone)
        offset = _offset(local.utcoffset() or timedelta(0))
    return f"{day}T{hour}:{minute}:{second}{fraction}{offset}"


def _offset(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _coding(code: str, display: str, system_name: str) -> Json | None:
    if not code:
        return None
    return pruned({"system": code_system(system_name), "code": code, "display": display})


def codeable(seg: Segment, field: int, rep: int = 1) -> Json | None:
    """A CE/CWE/CNE as a CodeableConcept: its identifier and alternate identifier as codings.

    The original text (CWE-9), else the first text given, is the concept's text,
    so a code only the sender knows still reads as something.
    """
    comps = seg.components(field, rep)
    if not any(comps):
        return None
    comps += [""] * (9 - len(comps))
    codings = [c for c in (_coding(*comps[0:3]), _coding(*comps[3:6])) if c is not None]
    text = comps[8] or comps[1] or comps[4] or (comps[0] if not codings else "")
    return pruned({"coding": codings, "text": text})


def identifier(seg: Segment, field: int, rep: int = 1, type_code: str = "") -> Json | None:
    """A CX as an Identifier: CX-1 the value, CX-4 the assigning authority, CX-5 the type."""
    value = seg.value(field, rep, 1)
    if not value:
        return None
    authority = tuple(seg.value(field, rep, 4, sub) or "" for sub in (1, 2, 3))
    return _identifier(value, authority, type_code or seg.value(field, rep, 5) or "")


def entity_identifier(seg: Segment, field: int, type_code: str = "") -> Json | None:
    """An EI (an order number, say) as an Identifier: EI-1 the value, EI-2..4 the assigning authority."""
    comps = seg.components(field)
    if not comps or not comps[0]:
        return None
    comps += [""] * (4 - len(comps))
    return _identifier(comps[0], (comps[1], comps[2], comps[3]), type_code)


def _identifier(value: str, authority: tuple[str, ...], type_code: str) -> Json:
    """The system is the authority's universal id when it has one (an OID becomes `urn:oid:`).

    A namespace alone is not a URI, so it goes in `assigner.display` rather
    than becoming an invented system.
    """
    namespace, universal, universal_type = authority
    return pruned(
        {
            "type": {"coding": [{"system": V2_TABLE + "0203", "code": type_code}]} if type_code else None,
            "system": _system(universal, universal_type),
            "value": value,
            "assigner": {"display": namespace} if namespace else None,
        }
    )


def _system(universal: str, universal_type: str) -> str | None:
    if not universal:
        return None
    kind = universal_type.upper()
    if kind == "ISO" or (not kind and re.fullmatch(r"[0-2](\.\d+)+", universal)):
        return f"urn:oid:{universal}"
    if kind == "UUID":
        return f"urn:uuid:{universal}"
    if kind in ("URI", "URL") or universal.startswith(("http://", "https://", "urn:")):
        return universal
    return None


def human_name(seg: Segment, field: int, rep: int = 1) -> Json | None:
    """An XPN as a HumanName (family, given and middle names, prefix, suffix, use)."""
    comps = seg.components(field, rep)
    comps += [""] * (7 - len(comps))
    family, given, middle, suffix, prefix, _degree, kind = comps[:7]
    if not (family or given):
        return None
    return pruned(
        {
            "use": NAME_USE.get(kind),
            "family": family,
            "given": [n for n in (given, middle) if n],
            "prefix": [prefix] if prefix else None,
            "suffix": [suffix] if suffix else None,
        }
    )


_ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "billing"}


def address(seg: Segment, field: int, rep: int = 1) -> Json | None:
    """An XAD as an Address (street lines, city, state, postal code, country, use)."""
    comps = seg.components(field, rep)
    comps += [""] * (7 - len(comps))
    street, other, city, state, postal, country, kind = comps[:7]
    if not any((street, other, city, state, postal, country)):
        return None
    return pruned(
        {
            "use": _ADDRESS_USE.get(kind),
            "line": [x for x in (street, other) if x],
            "city": city,
            "state": state,
            "postalCode": postal,
            "country": country,
        }
    )


def telecom(seg: Segment, field: int, rep: int, use: str) -> Json | None:
    """An XTN as a ContactPoint: a phone (as written, or built from its parts) or an email address."""
    comps = seg.components(field, rep)
    comps += [""] * (12 - len(comps))
    equipment = comps[2].upper()
    if equipment in ("INTERNET", "X.400") and comps[3]:
        return {"system": "email", "value": comps[3], "use": use}
    number = comps[0] or comps[11] or " ".join(p for p in (comps[4], comps[5], comps[6]) if p)
    if not number:
        return None
    system = "fax" if equipment == "FX" else "pager" if equipment == "BP" else "phone"
    return {"system": system, "value": number, "use": "mobile" if equipment == "CP" else use}
