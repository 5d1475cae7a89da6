"""What a FHIR server would refuse in a transaction Bundle, checked with a validator nobody here wrote (fhir.resources)."""

from __future__ import annotations

import json

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

__all__ = ["check_transaction", "references"]


def check_transaction(body: bytes) -> str | None:
    """What a FHIR server would refuse in this transaction Bundle, or None."""
    try:
        Bundle.model_validate_json(body)
    except ValidationError as exc:
        return f"invalid Bundle: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
    doc = json.loads(body)
    if doc.get("type") != "transaction":
        return f"expected a transaction Bundle, got type {doc.get('type')!r}"
    targets: set[str] = set()
    for entry in doc.get("entry", []):
        resource, request = entry["resource"], entry.get("request", {})
        url = f"{resource['resourceType']}/{resource.get('id')}"
        if request.get("method") != "PUT" or request.get("url") != url:
            return f"entry {url}: request {request} does not PUT the resource at its id"
        if url in targets:
            return f"{url} is the target of two entries"
        targets.add(url)
    missing = [r for r in references(doc) if r not in targets]
    return f"references to nothing in the Bundle: {missing}" if missing else None


def references(node: object) -> list[str]:
    """Every `reference` anywhere in a JSON document."""
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for v in node.values() for r in references(v)]
    if isinstance(node, list):
        return [r for v in node for r in references(v)]
    return []
