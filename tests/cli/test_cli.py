"""The `vigil` CLI end to end: inspect and demo, tables and JSON, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import cli
from engine.core.mllp import frame
from tests.harness.helpers import MSH_ADT, PID, hl7, oru

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"index", "ok", "kind", "type", "message_id", "patient", "lane", "reason", "events", "error"}


def _run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_inspect_json_shape_and_partial_failure(tmp_path: Path) -> None:
    """--json prints one object per message; a rejected one makes the exit status 1."""
    path = tmp_path / "feed.hl7"
    good = oru("OBX|1|NM|2823-3^K^LN||6.9|mmol/L|3.5-5.1|HH|||F")
    bad = hl7("MSH|^~\\&|A|B|C|D|2026||ORU^R01|X2|P|2.5.1", "OBR|1|P|F|X")  # no PID
    path.write_bytes(good + bad + hl7(MSH_ADT, PID))
    code, out, _ = _run("inspect", str(path), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert [set(r) for r in rows] == [KEYS] * 3
    assert [r["ok"] for r in rows] == [True, False, True]
    assert rows[0]["lane"] == "critical"
    assert rows[0]["reason"] == "critical result (OBX-8=HH)"
    assert rows[0]["events"][0]["event"] == "result"
    assert rows[1]["error"]["type"] == "MissingFieldError"
    assert rows[1]["error"]["message_index"] == 1
    assert rows[1]["error"]["byte_offset"] == len(good)
    assert rows[1]["error"]["segment"] == "PID"


def test_inspect_table_from_stdin_mllp() -> None:
    """`-` reads stdin; MLLP framing is detected; the table names lane and reason."""
    stream = frame(oru("OBX|1|NM|K||6.9|||HH")) + frame(hl7(MSH_ADT, PID))
    code, out, _ = _run("inspect", "-", stdin=stream)
    assert code == 0
    assert "critical" in out
    assert "ADT^A01" in out


def test_inspect_missing_file_is_one_line() -> None:
    """A file that cannot be read: non-zero exit, one line, no traceback."""
    code, _, err = _run("inspect", "/nonexistent/feed.hl7")
    assert code != 0
    assert err.strip().count("\n") == 0
    assert "cannot read" in err


def test_inspect_empty_input_is_an_error() -> None:
    """Nothing to inspect is said plainly."""
    code, _, err = _run("inspect", "-", stdin=b"")
    assert code != 0
    assert "no message found" in err


def test_inspect_unknown_format() -> None:
    """Bytes that are no known format are one rejected message with its offset."""
    code, out, _ = _run("inspect", "-", "--json", stdin=b"  hello")
    [row] = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert row["error"]["type"] == "FormatError"
    assert row["error"]["byte_offset"] == 2


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    """A wrong configuration value stops the command with one line naming the key."""
    conf = tmp_path / "bad.toml"
    conf.write_text("[ingest]\nmessage_bytes_max = 1\n")
    code, _, err = _run("--config", str(conf), "inspect", "-", stdin=oru())
    assert code != 0
    assert "ingest.message_bytes_max" in err
    assert err.strip().count("\n") == 0


def test_demo_json() -> None:
    """The demo runs a node over MLLP: every message durable, every lane used, the story patient's corrected result."""
    code, out, _ = _run("demo", "--messages", "400", "--seed", "3", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["messages"] == 406  # 400 generated + the story patient's 6
    assert {lane["lane"] for lane in report["lanes"]} == {"critical", "standard", "batch"}
    assert sum(lane["accepted"] for lane in report["lanes"]) == 406
    assert report["patient"] == "GENHOSP|MRN900001"
    assert [row["type"] for row in report["timeline"]] == [
        "ADT^A01",
        "ORM^O01",
        "ORU^R01",
        "ORU^R01",
        "RDE^O11",
        "ADT^A03",
    ]
    [potassium] = report["record"]["results"]
    # Facts encode as arrays (lsn, recorded_at, effective_at, message_id, source_patient, event).
    assert [v[-1]["value"] for v in potassium["versions"]] == ["6.9", "4.2"]
    assert potassium["current"]["value"] == "4.2"
    # Delivered onward to the stand-in EHR: every message, the critical potassium among them.
    assert sum(lane["delivered"] for lane in report["delivery"]) == 406 - report["still_to_deliver"]
    story = {s["control_id"]: s for s in report["story_delivery"]}
    assert story["STORY3"]["lane"] == "critical"
    assert story["STORY3"]["delivered_after_ms"] is not None


@pytest.mark.skipif(sys.platform == "win32", reason="bin/vigil is a bash script")
def test_bin_vigil_launcher_runs_the_cli() -> None:
    """The real launcher (bootstrap already done) runs `vigil inspect` from stdin."""
    proc = subprocess.run(
        [str(ROOT / "bin" / "vigil"), "inspect", "--json", "-"],
        input=oru("OBX|1|NM|K||4.0|||N"),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["lane"] == "standard"
