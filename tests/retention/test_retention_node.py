"""Retention in a real node: billing segments past their period leave the log for the archive while the
node serves; every record reads the same (from the node, and from the files once it stopped); the audit
trail proves the archive and the log together with the keyed checkpoints, and a damaged archive is named.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from engine.auth import Role
from engine.core.feedgen import FeedMix, generate_feed
from tests.harness.node_process import ROOT, VIGIL, log_records, node, run_stdin
from tests.harness.sessions import sign_in

_LOG = "[wal]\nsegment_bytes_max = 65536\ncheckpoint_records_interval = 100\n"
# A billing record's period is under a tenth of a second: every sealed segment of them is due at once.
_RETENTION = '[retention]\narchive = "archive"\nbatch_days = 0.000001\nstandard_days = 0.000001\ninterval_s = 0.2\n'


def _vigil(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VIGIL, "--config", str(config), *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )


def _records(config: Path, data: Path, keys: list[str]) -> dict[str, Any]:
    out = {}
    for key in keys:
        read = _vigil(config, "patient", key, "--data", str(data), "--json")
        assert read.returncode == 0, read.stderr
        out[key] = json.loads(read.stdout)
    return out


def _archived(config: Path, data: Path) -> dict[str, Any]:
    """The node's retention status once the pass has nothing more to judge."""
    for _ in range(300):
        report = json.loads(_vigil(config, "status", "--data", str(data), "--json").stdout)
        retention = report["retention"]
        if "no sealed segment is left" in retention["kept_because"]:
            return dict(retention)
        time.sleep(0.1)
    raise AssertionError(f"the archiver did not finish: {retention}")


def test_billing_segments_leave_the_log_and_every_proof_and_record_still_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_AUDIT_KEY", "k" * 32)  # the node's and the CLI's
    data = tmp_path / "data"
    plain, retained = tmp_path / "plain.toml", tmp_path / "retained.toml"
    plain.write_text(_LOG)
    retained.write_text(_LOG + _RETENTION)
    feed = generate_feed(800, seed=3, mix=FeedMix(0, 0, 0, 0, 0, 0, 1), patients=20, id_prefix="B")
    run_stdin(data, b"".join(feed), "--config", str(plain))
    records = log_records(data)
    keys = sorted({p for r in records for p in r.patients})[:4]
    sign_in(data, "dr.osei", Role.CLINICIAN, config=plain)
    _records(plain, data, keys)  # each read is audited: a record in the log
    more = generate_feed(300, seed=4, mix=FeedMix(0, 0, 0, 0, 0, 0, 1), patients=20, id_prefix="C")
    run_stdin(data, b"".join(more), "--config", str(plain))  # those audit records end up in sealed segments
    before = _records(plain, data, keys)  # folded from the whole log: no node runs

    with node(data, config=retained):
        _archived(retained, data)
        served = _records(retained, data, keys)  # from each patient's actor: its snapshot and the log after it
        # Those reads were audited, into the log: a segment they filled may have left for the archive too.
        retention = _archived(retained, data)
    assert retention["archived_segments"] >= 5
    assert retention["log_first_lsn"] == retention["archived_through_lsn"] + 1
    assert served == before
    assert _records(retained, data, keys) == before  # from the files: the snapshot, then the log after it

    sign_in(data, "privacy.kim", Role.PRIVACY_OFFICER, config=retained)
    trail = _vigil(retained, "audit", "access", keys[0], "--data", str(data), "--json")
    assert trail.returncode == 0, trail.stderr
    reads = [json.loads(line) for line in trail.stdout.splitlines()]
    assert any(r["user"] == "dr.osei" and r["lsn"] < retention["log_first_lsn"] for r in reads)  # from the archive

    audit = _vigil(retained, "audit", "verify", "--data", str(data), "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    proved = json.loads(audit.stdout)
    assert proved["archive"]["segments"] == retention["archived_segments"]
    assert proved["keyed_checkpoints"] >= len(records) // 100
    assert _vigil(retained, "wal", "verify", "--data", str(data)).returncode == 0
    listed = _vigil(retained, "archive", "verify", "--data", str(data))
    assert listed.returncode == 0, listed.stderr
    assert "the log begins where it ends" in listed.stdout

    second = sorted((data / "archive").glob("*.seg.gz"))[1]
    damaged = bytearray(second.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    second.write_bytes(bytes(damaged))
    audit = _vigil(retained, "audit", "verify", "--data", str(data), "--json")
    assert audit.returncode == 1
    assert second.name.removesuffix(".gz") in json.loads(audit.stdout)["problem"]
