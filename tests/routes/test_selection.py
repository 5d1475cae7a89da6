"""A route's filter, the MSH-5/6 rewrite, reading a destination's ACK, and destinations in config.toml."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import ConfigError
from engine.core.model import Kind, Lane
from engine.infra.config import decode_config
from engine.infra.route_config import RouteConfig, parse_destination
from engine.routes.outcome import Verdict, read_answer
from engine.routes.reading import read_candidates
from engine.routes.selection import Candidate, RouteFilter, rewrite_receiver
from engine.wal import open_wal
from tests.harness.helpers import hl7
from tests.harness.route_helpers import route_envelope

_ORU = hl7("MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01^ORU_R01|C1|P|2.5.1", "PID|1||42^^^H^MR", "OBX|1|NM|K")


def _candidate(lane: Lane = Lane.STANDARD, kind: Kind = Kind.HL7V2, mtype: str = "ORU^R01") -> Candidate:
    return Candidate(1, "H|42", lane, kind, mtype, "hl7:LAB|GENHOSP|C1", _ORU, event_kinds=frozenset({"result"}))


def _route(**fields: object) -> RouteConfig:
    return RouteConfig(name="ehr", destination="mllp://127.0.0.1:2575", **fields)  # type: ignore[arg-type]


def test_an_empty_filter_takes_every_message_but_the_nodes_own_commands() -> None:
    route = RouteFilter(_route())
    assert route.matches(_candidate())
    assert not route.matches(_candidate(kind=Kind.COMMAND, mtype="AUDIT^ACCESS"))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"lanes": (Lane.CRITICAL,)}, False),
        ({"lanes": (Lane.CRITICAL, Lane.STANDARD)}, True),
        ({"message_types": ("ADT^*",)}, False),
        ({"message_types": ("ADT^*", "ORU^R01")}, True),
        ({"message_types": ("ORU^*",)}, True),
        ({"senders": ("LAB^GENHOSP",)}, True),
        ({"senders": ("LAB^OTHER",)}, False),
        ({"senders": ("LAB^*",)}, True),
        ({"event_kinds": ("admitted", "discharged")}, False),
        ({"event_kinds": ("result", "admitted")}, True),
    ],
)
def test_the_filter(fields: dict[str, object], expected: bool) -> None:
    assert RouteFilter(_route(**fields)).matches(_candidate()) is expected


def test_a_fhir_message_has_no_sender_to_match() -> None:
    route = RouteFilter(_route(senders=("LAB^*",)))
    assert not route.matches(_candidate(kind=Kind.FHIR, mtype="Observation"))


def test_the_receiver_is_rewritten_and_nothing_else() -> None:
    out = rewrite_receiver(_ORU, "EHR", "MAIN")
    assert out.split(b"\r", 1)[0] == b"MSH|^~\\&|LAB|GENHOSP|EHR|MAIN|2026||ORU^R01^ORU_R01|C1|P|2.5.1"
    assert out.split(b"\r", 1)[1] == _ORU.split(b"\r", 1)[1]
    assert rewrite_receiver(_ORU, "", "") is _ORU


@given(st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="|^~\\&"), max_size=12))
def test_the_rewrite_keeps_the_rest_of_the_header(value: str) -> None:
    msh = f"MSH|^~\\&|A|B|{value}|{value}|2026||ADT^A01|X{value}|P|2.5"
    raw = hl7(msh, "PID|1||1^^^H^MR")
    fields = rewrite_receiver(raw, "EHR", "MAIN").split(b"\r")[0].split(b"|")
    original = raw.split(b"\r")[0].split(b"|")
    assert fields[4:6] == [b"EHR", b"MAIN"]
    assert fields[:4] + fields[6:] == original[:4] + original[6:]


def _ack(code: str, control_id: str = "C1", text: str = "") -> bytes:
    segments = ["MSH|^~\\&|EHR|MAIN|LAB|GENHOSP|2026||ACK^R01|A1|P|2.5.1", f"MSA|{code}|{control_id}|{text}"]
    if code == "AR":
        segments.append("ERR||PID^1^3|204|E|||unknown patient")
    return hl7(*segments)


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        ("AA", Verdict.DELIVERED),
        ("CA", Verdict.DELIVERED),
        ("AE", Verdict.RETRY),
        ("CE", Verdict.RETRY),
        ("AR", Verdict.REFUSED),
        ("CR", Verdict.REFUSED),
    ],
)
def test_an_ack_is_read_by_its_code(code: str, verdict: Verdict) -> None:
    assert read_answer(_ack(code), b"C1").verdict is verdict


def test_a_refusal_keeps_the_answer_text() -> None:
    attempt = read_answer(_ack("AR", text="rejected"), b"C1")
    assert attempt.answer.startswith("rejected | ")
    assert "unknown patient" in attempt.answer


def test_an_ack_for_another_message_or_no_ack_is_retried() -> None:
    assert read_answer(_ack("AA", control_id="C2"), b"C1").verdict is Verdict.RETRY
    assert read_answer(b"hello", b"C1").verdict is Verdict.RETRY
    assert read_answer(hl7("MSH|^~\\&|A|B|C|D|2026||ACK|1|P|2.5"), b"C1").verdict is Verdict.RETRY


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://x:1",
        "http://x:0",
        "http://user:secret@x/fhir",
        "https://x/fhir?token=1",
        "mllp://host",
        "mllp://host:0",
        "mllp://host:70000",
        "folder:",
        "ehr.example.org:2575",
    ],
)
def test_a_wrong_destination_is_refused_in_one_line(bad: str) -> None:
    with pytest.raises(ConfigError, match="destination"):
        parse_destination(bad)


def test_destinations() -> None:
    assert parse_destination("mllps://ehr.example.org:2575").port == 2575
    assert parse_destination("mllp://[::1]:2575").host == "::1"
    assert parse_destination("folder:out/ehr").path == "out/ehr"
    assert parse_destination("https://fhir.example.org/r4/").path == "https://fhir.example.org/r4"
    assert parse_destination("http://127.0.0.1:8080/hl7").scheme == "http"


def test_routes_in_config_toml() -> None:
    config = decode_config(
        '[[routes]]\nname = "ehr"\ndestination = "mllp://127.0.0.1:2575"\nlanes = ["critical"]\n'
        '[[routes]]\nname = "archive"\ndestination = "folder:archive"\n'
    )
    assert [r.name for r in config.routes] == ["ehr", "archive"]
    assert config.routes[0].lanes == (Lane.CRITICAL,)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[[routes]]\nname = "a"\ndestination = "x"\n', "destination"),
        (
            '[[routes]]\nname = "a"\ndestination = "folder:a"\n[[routes]]\nname = "a"\ndestination = "folder:b"\n',
            "twice",
        ),
        ('[[routes]]\nname = "A b"\ndestination = "folder:a"\n', "name"),
        ('[[routes]]\nname = "a"\ndestination = "folder:a"\norder = "random"\n', "order"),
        (
            '[[routes]]\nname = "a"\ndestination = "folder:a"\nfilter = 1\n',
            "unknown key routes[0].filter (allowed: name,",
        ),
        ('[[routes]]\nname = "a"\ndestination = "mllp://h:1"\ntransform = "fhir"\n', "MLLP carries HL7 v2"),
        ('[[routes]]\nname = "a"\ndestination = "folder:a"\ntransform = "xml"\n', "transform"),
        ('[[routes]]\nname = "a"\ndestination = "folder:a"\nevent_kinds = ["results"]\n', "known: admitted,"),
        ('[[routes]]\nname = "a"\ndestination = "folder:a"\ntimezone = "Mars/Base"\n', "IANA time zone"),
        ('[[routes]]\nname = "a"\ndestination = "folder:a"\nhttp_token_file = "t"\n', "not http(s)"),
        ('[[routes]]\nname = "a"\ndestination = "http://h/fhir"\ntls_ca_file = "ca.pem"\n', "https://"),
    ],
)
def test_a_wrong_route_is_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        decode_config(text)


@pytest.mark.anyio
async def test_a_route_reads_each_records_event_kinds_from_the_log(tmp_path: Path) -> None:
    async with open_wal(tmp_path / "wal") as wal:
        await wal.append([route_envelope(1, "H|P1"), route_envelope(2, "H|P2", mtype="ADT^A01")])
        candidates = await anyio.to_thread.run_sync(read_candidates, wal, 1, 10, 1 << 20)
    assert [c.event_kinds for c in candidates] == [frozenset({"unrecognized"})] * 2
    only_results = RouteFilter(_route(event_kinds=("result",)))
    assert not any(only_results.matches(c) for c in candidates)
