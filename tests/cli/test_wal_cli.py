"""`vigil wal verify`, `vigil wal dump` and `vigil audit verify` on real logs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anyio
import msgspec
import pytest
from click.testing import CliRunner

from engine.auth import Role
from engine.cli.main import cli
from engine.infra.config import WalConfig
from engine.search import control_id_of, header_metadata, sender_of
from engine.wal import open_wal
from engine.wal.files import OSFiles
from engine.wal.reader import iter_records
from engine.wal.record import GENESIS_HASH, SEGMENT_MAGIC, encode_frame
from tests.harness.helpers import envelope
from tests.harness.sessions import sign_in

KEY = "a-test-key-of-sufficient-length"
CONFIG = WalConfig(checkpoint_records_interval=10, segment_bytes_max=64 * 1024)


def _make_log(data: Path, count: int = 40, key: str | None = KEY) -> None:
    async def fill() -> None:
        async with open_wal(data / "wal", CONFIG, audit_key=key.encode() if key else None) as wal:
            for i in range(count):
                await wal.append([envelope(i, patient="H|A" if i % 4 == 0 else "H|B")])

    anyio.run(fill)


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_verify_a_good_log(tmp_path: Path) -> None:
    """Every record checked, chain from genesis, the checkpoint matches."""
    _make_log(tmp_path)
    code, out, _ = _run("wal", "verify", "--data", str(tmp_path), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["ok"]
    assert (report["records"], report["chain_checked"], report["last_lsn"]) == (40, 40, 40)
    assert report["checkpoint"]["matches"]
    code, out, _ = _run("wal", "verify", "--data", str(tmp_path))
    assert code == 0
    assert "hash chain from genesis to LSN 40" in out


def test_verify_reports_the_first_problem(tmp_path: Path) -> None:
    """A flipped bit before the tail: exit 1, naming segment and offset."""
    _make_log(tmp_path)
    segment = min((tmp_path / "wal").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[len(SEGMENT_MAGIC) + 100] ^= 1
    segment.write_bytes(bytes(data))
    code, out, _ = _run("wal", "verify", "--data", str(tmp_path), "--json")
    report = json.loads(out)
    assert code == 1
    assert report["segment"] == segment.name
    assert "CRC mismatch" in report["problem"]


def test_verify_reports_an_incomplete_tail_without_failing(tmp_path: Path) -> None:
    """Bytes after the last record are a torn tail, not corruption."""
    _make_log(tmp_path)
    with max((tmp_path / "wal").glob("*.seg")).open("ab") as f:
        f.write(b"\x10\x00\x00\x00partial")
    code, out, _ = _run("wal", "verify", "--data", str(tmp_path), "--json")
    assert code == 0
    assert json.loads(out)["tail"]["size"] == 11


def test_dump_ndjson_with_original_bytes(tmp_path: Path) -> None:
    """NDJSON, original bytes in base64; --from and --patient select. Content: only for a role given log.content."""
    _make_log(tmp_path)
    config = tmp_path / "vigil.toml"
    config.write_text('[auth.permissions]\nintegration_operator = ["log.metadata", "log.content"]\n')
    sign_in(tmp_path, "op.kim", Role.OPERATOR)
    code, _, err = _run("wal", "dump", "--data", str(tmp_path), "--json")
    assert code != 0
    assert "may not log.content" in err  # not with the default permissions
    code, out, _ = _run("--config", str(config), "wal", "dump", "--data", str(tmp_path), "--json", "--from", "38")
    everything = [json.loads(line) for line in out.splitlines()]
    rows = [r for r in everything if r["type"] != "AUDIT^ACCESS"]
    assert code == 0
    assert [r["lsn"] for r in rows] == [38, 39, 40]
    assert base64.b64decode(rows[0]["raw_base64"]) == envelope(37).raw
    # The login, the refused dump and this dump itself are in the log too, after the messages.
    audit = [e["events"][0] for e in everything if e["type"] == "AUDIT^ACCESS"]
    assert [(e["action"], e["outcome"]) for e in audit] == [
        ("login", "allowed"),
        ("wal_dump", "denied"),
        ("wal_dump", "allowed"),
    ]
    args = ("--config", str(config), "wal", "dump", "--data", str(tmp_path))
    code, out, _ = _run(*args, "--json", "--patient", "H|A")
    shown = [json.loads(line) for line in out.splitlines()]
    assert [r["lsn"] for r in shown if r["type"] != "AUDIT^ACCESS"] == list(range(1, 41, 4))
    assert shown[-1]["events"][0]["action"] == "wal_dump"  # the patient's trail holds this very read
    code, out, _ = _run(*args)
    assert code == 0
    assert "ORU^R01" in out


def test_missing_log_is_one_line(tmp_path: Path) -> None:
    """No log at the data directory: one line, non-zero."""
    code, _, err = _run("wal", "verify", "--data", str(tmp_path / "none"))
    assert code != 0
    assert "no log at" in err


def test_audit_verify_needs_the_key(tmp_path: Path) -> None:
    """Without the key in the environment, audit verify refuses in one line."""
    _make_log(tmp_path)
    code, _, err = _run("audit", "verify", "--data", str(tmp_path), env={"VIGIL_AUDIT_KEY": ""})
    assert code != 0
    assert "set VIGIL_AUDIT_KEY" in err


def test_the_data_directory_and_configuration_come_from_the_environment(tmp_path: Path) -> None:
    """VIGIL_DATA (and VIGIL_CONFIG) stand for --data (and --config) on every command; --version says which."""
    _make_log(tmp_path)
    code, out, _ = _run("wal", "verify", "--json", env={"VIGIL_DATA": str(tmp_path)})
    assert code == 0
    assert json.loads(out)["records"] == 40
    config = tmp_path / "vigil.toml"
    config.write_text("[node]\nid = 'x'\nunknown_key = 1\n")
    message = tmp_path / "m.hl7"
    message.write_bytes(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|1|P|2.5.1\rPID|1||1^^^H^MR\r")
    code, _, err = _run("inspect", str(message), env={"VIGIL_CONFIG": str(config)})
    assert code != 0
    assert "unknown_key" in err
    code, out, _ = _run("--version")
    assert (code, out.split()[0]) == (0, "vigil")


def test_audit_verify_good_and_wrong_key(tmp_path: Path) -> None:
    """The right key verifies every keyed checkpoint; a wrong one does not."""
    _make_log(tmp_path)
    code, out, _ = _run("audit", "verify", "--data", str(tmp_path), "--json", env={"VIGIL_AUDIT_KEY": KEY})
    report = json.loads(out)
    assert code == 0, report
    # Checkpoints are written beside the appends: under load one may cover several intervals.
    assert report["keyed_checkpoints"] >= 1
    code, out, _ = _run("audit", "verify", "--data", str(tmp_path), "--json", env={"VIGIL_AUDIT_KEY": "x" * 32})
    assert code == 1
    assert "MAC does not verify" in json.loads(out)["problem"]


def test_a_chain_rewritten_end_to_end_passes_wal_verify_but_not_audit(tmp_path: Path) -> None:
    """Rewriting every record with a fresh chain and CRCs fools the chain, not the keyed checkpoints."""
    _make_log(tmp_path)
    wal_dir = tmp_path / "wal"
    records = list(iter_records(wal_dir, OSFiles()))
    for segment in wal_dir.glob("*.seg"):
        segment.unlink()
    (wal_dir / "checkpoint").unlink()
    prev = GENESIS_HASH
    frames = []
    for record in records:
        forged_env = msgspec.structs.replace(record.envelope, source="forged")
        forged = msgspec.structs.replace(record, envelope=forged_env, prev_hash=prev)
        frame, prev = encode_frame(forged)
        frames.append(frame)
    (wal_dir / f"{1:020d}.seg").write_bytes(SEGMENT_MAGIC + b"".join(frames))
    code, out, _ = _run("wal", "verify", "--data", str(tmp_path), "--json")
    assert code == 0, out
    code, out, _ = _run("audit", "verify", "--data", str(tmp_path), "--json", env={"VIGIL_AUDIT_KEY": KEY})
    assert code == 1
    assert "rewritten" in json.loads(out)["problem"]


@pytest.mark.parametrize("key", [None])
def test_audit_without_checkpoints_is_a_problem(tmp_path: Path, key: str | None) -> None:
    """A log written without a key has nothing vouching for it."""
    _make_log(tmp_path, key=key)
    code, out, _ = _run("audit", "verify", "--data", str(tmp_path), "--json", env={"VIGIL_AUDIT_KEY": KEY})
    assert code == 1
    assert "no keyed checkpoint" in json.loads(out)["problem"]


def test_verify_and_audit_after_segments_were_released(tmp_path: Path) -> None:
    """After a release, the chain verifies from the base and keyed checkpoints below it are MAC-checked only."""
    config = WalConfig(checkpoint_records_interval=10, segment_bytes_max=64 * 1024)

    async def fill_and_release() -> int:
        async with open_wal(tmp_path / "wal", config, audit_key=KEY.encode()) as wal:
            for i in range(120):
                await wal.append([envelope(i, size=2000)])
            await wal.release_segments_before(80)
            return wal.first_lsn

    first = anyio.run(fill_and_release)
    assert first > 1
    code, out, _ = _run("wal", "verify", "--data", str(tmp_path), "--json")
    report = json.loads(out)
    assert code == 0, report
    assert (report["first_lsn"], report["last_lsn"]) == (first, 120)
    code, out, _ = _run("audit", "verify", "--data", str(tmp_path), "--json", env={"VIGIL_AUDIT_KEY": KEY})
    assert code == 0, out


@pytest.mark.parametrize(
    ("message_id", "sender", "control_id"),
    [("hl7:LAB|GENHOSP|C42", "LAB^GENHOSP", "C42"), ("hl7:||X|Y", "^", "X|Y"), ("fhir:Bundle/b1", "", "Bundle/b1")],
)
def test_a_records_sender_and_control_id_are_metadata(message_id: str, sender: str, control_id: str) -> None:
    """`vigil log` shows them to operators without log.content: they say who sent it, not about whom."""
    assert (sender_of(message_id), control_id_of(message_id)) == (sender, control_id)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"MSH|^~\\&|LAB|GENHOSP|V|H|2026||ORU^R01^ORU_R01|C9|P|2.5.1\rPID|1||X", ("LAB^GENHOSP", "ORU^R01", "C9")),
        (b"MSH#$~\\&#LAB#H#V#H#2026##ADT$A01#C1#P#2.5", ("LAB^H", "ADT^A01", "C1")),
        (b"not hl7 at all", ("", "", "")),
    ],
)
def test_a_quarantined_items_header_is_read_as_well_as_it_can_be(raw: bytes, expected: tuple[str, str, str]) -> None:
    assert header_metadata(raw) == expected
