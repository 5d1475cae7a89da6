"""Backup and restore against a real node: a backup taken while MLLP senders are acknowledged holds every
message acknowledged before it began; restored into a new directory its log recovers (CRC, hash chain) to
the manifest's LSN. A damaged or partial backup is refused, naming the file; only data.backup may take one.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from engine.auth import AuthStore, Role
from engine.backup import MANIFEST_FILE
from engine.core.hl7 import parse
from engine.core.mllp import MLLPDecoder
from tests.harness.node_process import ROOT, VIGIL, exchange, log_records, message, node, run_stdin
from tests.harness.sessions import sign_in

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="the admin socket is a Unix socket")


def _vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIGIL, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


def _feed(port: int, acked: list[str], stop: threading.Event) -> None:
    """One sender, each message waiting for its AA; the ids acknowledged, in order."""
    decoder = MLLPDecoder()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        n = 0
        while not stop.is_set():
            n += 1
            if parse(exchange(conn, message(n), decoder)).get("MSA-1") == "AA":
                acked.append(f"hl7:LAB|GENHOSP|CTL{n:06d}")


def test_a_backup_taken_while_the_node_acknowledges_restores_to_a_whole_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restored, the log verifies with the audit key: the backup sealed it (a keyed checkpoint) at its moment."""
    monkeypatch.setenv("VIGIL_AUDIT_KEY", "k" * 32)  # the node's and the CLI's
    data, dest, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    acked: list[str] = []
    stop = threading.Event()
    with node(data) as (_proc, port):
        sign_in(data, "admin.lee", Role.ADMINISTRATOR)
        sender = threading.Thread(target=_feed, args=(port, acked, stop))
        sender.start()
        try:
            while len(acked) < 50:
                stop.wait(0.01)
            before = list(acked)
            taken = _vigil("backup", str(dest), "--data", str(data), "--json")
            after = len(acked)
        finally:
            stop.set()
            sender.join(timeout=30)
    assert taken.returncode == 0, taken.stderr
    answer = json.loads(taken.stdout)
    assert after > len(before)  # the node kept acknowledging beside the backup
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    assert manifest["last_lsn"] == answer["last_lsn"]
    assert not any(name.startswith(("snapshots", "search", "admin")) for name in manifest["files"])
    assert (dest.stat().st_mode & 0o777) == 0o700

    checked = _vigil("restore", str(dest), "--check")  # the nightly drill: nothing restored
    assert checked.returncode == 0, checked.stderr
    assert f"verified to LSN {answer['last_lsn']:,}" in checked.stdout
    done = _vigil("restore", str(dest), "--data", str(restored))
    assert done.returncode == 0, done.stderr
    assert f"through LSN {answer['last_lsn']:,}" in done.stdout
    records = log_records(restored)
    assert [r.lsn for r in records] == list(range(1, answer["last_lsn"] + 1))
    verified = _vigil("audit", "verify", "--data", str(restored), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["keyed_checkpoints"] >= 1
    # A node serves the restored directory: the next message takes the next LSN.
    rows, _logs = run_stdin(restored, message(100_000))
    assert rows == [{"outcome": "accepted", "lsns": [answer["last_lsn"] + 1]}]
    assert set(before) <= {r.message_id for r in records}
    store = AuthStore(restored)
    try:
        user = store.user("admin.lee")
    finally:
        store.close()
    assert user is not None
    assert user.roles == (Role.ADMINISTRATOR,)
    # The backup itself is in the trail of the log it was taken from.
    audits = [r for r in log_records(data) if r.message_id.startswith("audit:")]
    backups = [r for r in audits if b'"action":"backup"' in r.envelope.raw]
    assert backups, "the backup was not audited"


def test_a_damaged_or_partial_backup_is_refused_naming_what_is_wrong(tmp_path: Path) -> None:
    data, dest = tmp_path / "data", tmp_path / "backup"
    sign_in(data, "admin.lee", Role.ADMINISTRATOR)  # no node runs: the backup is taken here, under the log's lock
    taken = _vigil("backup", str(dest), "--data", str(data))
    assert taken.returncode == 0, taken.stderr
    assert "backup in" in taken.stdout
    again = _vigil("backup", str(dest), "--data", str(data))
    assert again.returncode == 1
    assert "not an empty directory" in again.stderr

    [segment] = sorted((dest / "wal").glob("*.seg"))
    body = segment.read_bytes()
    segment.write_bytes(body[:-1] + bytes([body[-1] ^ 0xFF]))
    damaged = _vigil("restore", str(dest), "--data", str(tmp_path / "r1"))
    assert damaged.returncode == 1
    assert f"wal/{segment.name} differs from the manifest" in damaged.stderr
    assert not (tmp_path / "r1").exists() or not any((tmp_path / "r1").iterdir())

    (dest / MANIFEST_FILE).unlink()
    partial = _vigil("restore", str(dest), "--data", str(tmp_path / "r2"))
    assert partial.returncode == 1
    assert "not a whole backup" in partial.stderr


def test_only_data_backup_may_take_a_backup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with node(data) as (_proc, port):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            assert parse(exchange(conn, message(1), MLLPDecoder())).get("MSA-1") == "AA"
        sign_in(data, "op.kim", Role.OPERATOR)
        refused = _vigil("backup", str(tmp_path / "backup"), "--data", str(data))
    assert refused.returncode == 1
    assert "data.backup" in refused.stderr
    assert not (tmp_path / "backup").exists()


def test_the_check_finds_a_log_copy_changed_with_its_manifest(tmp_path: Path) -> None:
    """Whoever rewrites a segment and its manifest entry alike still meets the log's own CRCs and chain."""
    data, dest = tmp_path / "data", tmp_path / "backup"
    sign_in(data, "admin.lee", Role.ADMINISTRATOR)
    assert _vigil("backup", str(dest), "--data", str(data)).returncode == 0
    [segment] = sorted((dest / "wal").glob("*.seg"))
    body = bytearray(segment.read_bytes())
    body[len(body) // 2] ^= 0xFF
    segment.write_bytes(bytes(body))
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    manifest["files"][f"wal/{segment.name}"] = {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    (dest / MANIFEST_FILE).write_text(json.dumps(manifest))
    checked = _vigil("restore", str(dest), "--check")
    assert checked.returncode == 1
    assert "is damaged" in checked.stderr
