"""Decoding FHIR R4 JSON: single resources, Bundles and NDJSON streams.

Decoders are built once and reused (msgspec's advice). A document is read in
two passes over C code: the first reads only `resourceType`, the second decodes
into that resource's Struct, so a resource Vigil does not know is kept raw
instead of failing a union. Bundle entries stay `msgspec.Raw` until decoded,
which keeps each entry's exact bytes.
"""

from __future__ import annotations

import re
from typing import Any, final

import msgspec

from engine.core.errors import ErrorLocation, JSONError, ShapeError
from engine.core.fhir.resources import RESOURCE_TYPES, Bundle, RawResource, Resource

__all__ = ["BundleEntry", "DecodedBundle", "decode_document", "decode_resource", "split_ndjson"]


class _Head(msgspec.Struct, frozen=True):
    resourceType: str | None = None  # noqa: N815 -- the FHIR element's name
    id: str | None = None


_HEAD = msgspec.json.Decoder(_Head)
_BUNDLE = msgspec.json.Decoder(Bundle)
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(cls) for name, cls in RESOURCE_TYPES.items()
}
_BOM = b"\xef\xbb\xbf"
_BYTE = re.compile(r"\(byte (\d+)\)")
_AT = re.compile(r" - at `(\$[^`]*)`")


@final
class BundleEntry(msgspec.Struct, frozen=True):
    """One decoded Bundle entry, with its position and exact JSON."""

    index: int
    full_url: str | None
    resource: Resource
    json: bytes


@final
class DecodedBundle(msgspec.Struct, frozen=True):
    """A Bundle and its decoded entries (each carries a resource: a Bundle with an entry without one is refused)."""

    bundle: Bundle
    entries: tuple[BundleEntry, ...]

    @property
    def id(self) -> str | None:
        return self.bundle.id

    @property
    def type(self) -> str:
        return self.bundle.type or ""


def decode_document(raw: bytes) -> Resource | DecodedBundle:
    """Decode one FHIR JSON document (a resource or a Bundle).

    Raises:
        JSONError: not JSON (the error names the byte offset).
        ShapeError: JSON, but not a resource, or a known resource of the wrong
            shape (the error names the JSON path).
    """
    if raw.startswith(_BOM):
        try:
            return decode_document(raw[len(_BOM) :])
        except JSONError as exc:
            raise exc.located(byte_offset=len(_BOM)) from None
    if not raw.isascii():
        # JSON is UTF-8; msgspec checks only the strings it keeps, so check all.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _utf8_error(raw) from None
    head = _head(raw, "$")
    if head.resourceType == "Bundle":
        bundle = _decode(_BUNDLE, raw, "$")
        for i, e in enumerate(bundle.entry):
            if not len(e.resource):
                # Dropping it would lose what it stood for (a REST request, say), without a word.
                inline = f" (it says resourceType {e.resource_type} itself: not under `resource`)"
                inline = inline if e.resource_type else ""
                raise ShapeError(
                    f"Bundle entry {i} has no resource{inline}: every entry must carry one",
                    ErrorLocation(path=f"$.entry[{i}]"),
                )
        entries = tuple(
            BundleEntry(i, e.full_url, decode_resource(bytes(e.resource), f"$.entry[{i}].resource"), bytes(e.resource))
            for i, e in enumerate(bundle.entry)
        )
        return DecodedBundle(bundle, entries)
    return decode_resource(raw, "$", head)


def decode_resource(raw: bytes, path: str = "$", head: _Head | None = None) -> Resource:
    """Decode one resource; an unknown resource type is kept as `RawResource`."""
    head = head if head is not None else _head(raw, path)
    rtype = head.resourceType or ""
    decoder = _DECODERS.get(rtype)
    if decoder is None:
        return RawResource(rtype, head.id, bytes(raw))
    resource: Resource = _decode(decoder, raw, path)
    return resource


def _head(raw: bytes, path: str) -> _Head:
    try:
        head = _HEAD.decode(raw)
    except msgspec.ValidationError as exc:
        if "Expected `object`" in str(exc):
            raise ShapeError("a FHIR document must be a JSON object", ErrorLocation(path=path)) from None
        raise _shape_error(exc, path) from None
    except msgspec.DecodeError as exc:
        raise _json_error(exc) from None
    except UnicodeDecodeError:
        raise _utf8_error(raw) from None
    if not head.resourceType:
        raise ShapeError("JSON object has no resourceType: not a FHIR resource", ErrorLocation(path=path))
    return head


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes, path: str) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _shape_error(exc, path) from None
    except msgspec.DecodeError as exc:
        raise _json_error(exc) from None
    except UnicodeDecodeError:
        raise _utf8_error(raw) from None


def _utf8_error(raw: bytes) -> JSONError:
    """JSON must be UTF-8; name the first byte that is not."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return JSONError("invalid JSON: not UTF-8", ErrorLocation(byte_offset=exc.start))
    return JSONError("invalid JSON: not UTF-8")


def _json_error(exc: msgspec.DecodeError) -> JSONError:
    m = _BYTE.search(str(exc))
    return JSONError(
        f"invalid JSON: {_BYTE.sub('', str(exc)).strip()}", ErrorLocation(byte_offset=int(m.group(1)) if m else None)
    )


def _shape_error(exc: msgspec.ValidationError, path: str) -> ShapeError:
    text = str(exc)
    m = _AT.search(text)
    where = path + m.group(1)[1:] if m else path
    return ShapeError(f"unexpected resource shape: {_AT.sub('', text)}", ErrorLocation(path=where))


def split_ndjson(raw: bytes) -> list[tuple[int, bytes]]:
    """Cut an NDJSON stream (FHIR bulk data) into (byte offset, line) pairs.

    Blank lines are skipped; a line that is not JSON fails when decoded, with
    its own offset, so one bad line never hides the others.
    """
    out: list[tuple[int, bytes]] = []
    pos = 0
    for line in raw.split(b"\n"):
        if line.strip():
            out.append((pos, line))
        pos += len(line) + 1
    return out
