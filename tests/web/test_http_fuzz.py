"""Fuzzed requests to a real node's HTTP face: no crash, and every fault answered in its own format.

Bodies for `POST /fhir` and `POST /hl7v2`, and query strings for the FHIR
searches, drawn by hypothesis (JSON that is nearly FHIR, text that is nearly
HL7, plain bytes). Each answer must be a 2xx/4xx (never a 5xx): an
OperationOutcome for FHIR, an ACK for HL7 v2. The node is still ready after.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.auth import ApiClient, AuthStore
from engine.auth.hashing import token_digest
from tests.harness.node_process import http_node

TOKEN = "vgc_fuzz-token"
_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_TYPES = st.sampled_from(["Bundle", "Patient", "Observation", "Encounter", "Basic", "", "bundle"])
_FHIR = st.one_of(
    st.binary(max_size=300),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda t, kind, entries: json.dumps({"resourceType": t, "type": kind, "entry": entries}).encode(),
        _TYPES,
        st.sampled_from(["transaction", "batch", "message", "collection", 3]),
        st.lists(
            st.builds(lambda r: {"resource": r}, st.dictionaries(st.just("resourceType"), _TYPES) | _JSON), max_size=3
        ),
    ),
)
_SEGMENTS = st.sampled_from(
    ["MSH|^~\\&|LAB|H|V|H|2026||ORU^R01|X|P|2.5.1", "PID|1||1^^^H^MR", "OBX|1|NM|x||6.9", "EVN|A01", "\x00", "MSH|"]
)
_HL7 = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(_SEGMENTS, st.text(max_size=30)), min_size=1, max_size=5).map(
        lambda s: "\r".join(s).encode("utf-8", "surrogatepass")
    ),
)
_QUERY = st.lists(
    st.tuples(
        st.sampled_from(["patient", "code", "date", "_count", "_offset", "_as-of", "_as-known-at", "x"]),
        st.text(max_size=20),
    ),
    max_size=4,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    base = tmp_path_factory.mktemp("fuzz")
    store = AuthStore.open_private(base / "data")
    try:
        store.add_client(ApiClient("fuzz", ("system/*.*",), token_digest(TOKEN), 0.0, "test"))
    finally:
        store.close()
    config = base / "http.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\nbody_bytes_max = 4096\n')
    with http_node(base / "data", config) as (proc, _mllp, port):
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:
            yield http
        assert proc.poll() is None, "the node died under fuzzing"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def _outcome(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text[:500]
    body = answer.json()
    assert body["resourceType"] in {"OperationOutcome", "Bundle", "Patient"}, body


@_SETTINGS
@given(body=_FHIR)
def test_fuzzed_fhir_bodies_get_an_operation_outcome(served: httpx.Client, body: bytes) -> None:
    _outcome(served.post("/fhir", content=body, headers={"Content-Type": "application/fhir+json"}))


@_SETTINGS
@given(body=_HL7)
def test_fuzzed_hl7_bodies_get_an_ack_or_a_clear_refusal(served: httpx.Client, body: bytes) -> None:
    answer = served.post("/hl7v2", content=body, headers={"Content-Type": "x-application/hl7-v2+er7"})
    assert answer.status_code < 500, answer.text[:500]
    if answer.headers["content-type"].startswith("x-application/hl7-v2"):
        assert answer.content.startswith(b"MSH|")
        assert b"\rMSA|" in answer.content
    else:
        assert answer.json()["resourceType"] == "OperationOutcome"


@_SETTINGS
@given(params=_QUERY, rtype=st.sampled_from(["Observation", "Encounter", "Patient", "AllergyIntolerance", "Nope"]))
def test_fuzzed_searches_get_a_bundle_or_an_operation_outcome(
    served: httpx.Client, params: list[tuple[str, str]], rtype: str
) -> None:
    _outcome(served.get(f"/fhir/{rtype}", params=params))


def test_the_node_is_still_ready_after(served: httpx.Client) -> None:
    assert served.get("/readyz").status_code == 200
