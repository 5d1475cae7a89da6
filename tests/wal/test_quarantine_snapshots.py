"""Quarantine (refused input kept whole) and snapshots (atomic, CRC-checked, PHI-free names)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.auth import Role
from engine.cli.main import cli
from engine.core.errors import ErrorLocation, MissingFieldError
from engine.wal import open_wal
from engine.wal.files import OSFiles
from engine.wal.quarantine import QUARANTINE_FILE, Quarantine
from engine.wal.snapshots import Snapshot, SnapshotStore
from tests.harness.faultfs import FaultyFiles
from tests.harness.helpers import MSH_ORU, hl7, oru
from tests.harness.sessions import PASSWORD, sign_in

ERROR = MissingFieldError("ORU^R01 requires a patient identifier", ErrorLocation(segment="PID", field=3)).to_dict()


def test_quarantine_keeps_bytes_reason_and_resolution(tmp_path: Path) -> None:
    """Items keep their original bytes; a resolution is appended, never rewritten."""
    q = Quarantine(tmp_path, OSFiles())
    first = q.add(b"\x0bMSH|broken", source="mllp:127.0.0.1:5000", reason="no PID", error=ERROR, at="t1")
    second = q.add(b"{}", source="stdin", reason="not FHIR", error={}, at="t2")
    q.resolve(first, outcome="dismissed by operator", at="t3")
    items = Quarantine(tmp_path, OSFiles()).items()
    assert [(i.qid, i.raw, i.open) for i in items] == [(first, b"\x0bMSH|broken", False), (second, b"{}", True)]
    assert items[0].resolved == "dismissed by operator"
    assert items[0].error["segment"] == "PID"


def test_quarantine_survives_a_torn_entry(tmp_path: Path) -> None:
    """A crash mid-append leaves a torn entry: it is ignored, and cut off by the next append."""
    files = FaultyFiles()
    q = Quarantine(tmp_path, files)
    q.add(b"one", source="s", reason="r", error={}, at="t")
    with (tmp_path / QUARANTINE_FILE).open("ab") as f:
        f.write(b"\x40\x00\x00\x00torn")
    assert [i.raw for i in q.items()] == [b"one"]
    q.add(b"two", source="s", reason="r", error={}, at="t")
    assert [i.raw for i in Quarantine(tmp_path, files).items()] == [b"one", b"two"]


def test_a_reader_follows_what_another_appends_and_keeps_no_bytes(tmp_path: Path) -> None:
    """A node's quarantine reads each entry once; another process's appends (a CLI's) are seen at the next look."""
    node, cli_side = Quarantine(tmp_path, OSFiles()), Quarantine(tmp_path, OSFiles())
    first = node.add(b"one", source="s", reason="r", error={}, at="t1")
    assert [(i.qid, i.raw, i.size) for i in node.summaries()] == [(first, b"", 3)]
    cli_side.resolve(first, outcome="discarded", at="t2", by="op.kim", note="a test message")
    second = node.add(b"two!", source="s", reason="r", error={}, at="t3")
    assert second == first + 1
    summaries = node.summaries()
    assert [(i.resolved, i.resolved_by, i.note, i.open) for i in summaries] == [
        ("discarded", "op.kim", "a test message", False),
        (None, "", "", True),
    ]
    assert [i.raw for i in cli_side.items()] == [b"one", b"two!"]
    found = cli_side.get(second)
    assert found is not None
    assert found.raw == b"two!"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["add", "resolve", "look"]), st.booleans(), st.binary(max_size=40))))
def test_any_interleaving_of_two_handles_reads_as_a_fresh_one(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, bool, bytes]]
) -> None:
    """Two handles on one file (a node's and a CLI's) appending and reading in any order see what a fresh one sees."""
    directory = tmp_path_factory.mktemp("q")
    handles = (Quarantine(directory, OSFiles()), Quarantine(directory, OSFiles()))
    for op, which, raw in steps:
        handle = handles[which]
        if op == "add":
            handle.add(raw, source="s", reason="r", error={}, at="t")
        elif op == "resolve" and handle.summaries():
            handle.resolve(handle.summaries()[-1].qid, outcome="resolved", at="t", by="u", note="n")
        for h in handles:
            assert h.items() == Quarantine(directory, OSFiles()).items()
    qids = [i.qid for i in handles[0].items()]
    assert qids == list(range(1, len(qids) + 1))  # ids are never given twice


def test_snapshots_newest_valid_wins(tmp_path: Path) -> None:
    """The newest snapshot is loaded; a damaged one falls back to the one before; old ones are pruned."""
    store = SnapshotStore(tmp_path, OSFiles(), keep=2)
    for lsn in (10, 20, 30):
        store.save(Snapshot("GENHOSP|MRN42", lsn, "t", f"state@{lsn}".encode()))
    assert store.load("GENHOSP|MRN42") == Snapshot("GENHOSP|MRN42", 30, "t", b"state@30")
    assert store.load("GENHOSP|MRN42", at_most_lsn=25) == Snapshot("GENHOSP|MRN42", 20, "t", b"state@20")
    files = sorted(tmp_path.rglob("*.snap"))
    assert [f.name for f in files] == [f"{20:020d}.snap", f"{30:020d}.snap"]
    data = bytearray(files[-1].read_bytes())
    data[-1] ^= 0xFF
    files[-1].write_bytes(bytes(data))
    loaded = store.load("GENHOSP|MRN42")
    assert loaded is not None
    assert loaded.lsn == 20
    assert store.load("GENHOSP|nobody") is None


def test_snapshot_file_names_hold_no_identifier(tmp_path: Path) -> None:
    """Patient keys are PHI: paths use a hash of the key."""
    SnapshotStore(tmp_path, OSFiles()).save(Snapshot("GENHOSP|MRN42", 1, "t", b"s"))
    assert not any("MRN42" in str(p) for p in tmp_path.rglob("*"))


def test_keep_must_be_positive(tmp_path: Path) -> None:
    """Keeping no snapshot would be a misconfiguration."""
    with pytest.raises(ValueError, match="at least one"):
        SnapshotStore(tmp_path, OSFiles(), keep=0)


def _run(*args: str, secret: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False, input=secret)
    return result.exit_code, result.stdout, result.stderr


def test_quarantine_cli_list_show_retry(tmp_path: Path) -> None:
    """list shows metadata only; show has the bytes; retry accepts what now decodes, into the log."""
    q = Quarantine(tmp_path / "quarantine", OSFiles())
    still_bad = q.add(hl7(MSH_ORU, "OBR|1|P|F|X"), source="stdin", reason="no PID", error=ERROR, at="t1")
    fixed = q.add(oru("OBX|1|NM|K||4.1|||N"), source="stdin", reason="was refused by an old rule", error={}, at="t2")
    sign_in(tmp_path, "op.kim", Role.OPERATOR)
    code, out, _ = _run("quarantine", "list", "--data", str(tmp_path), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [r["qid"] for r in rows] == [still_bad, fixed]
    assert "raw" not in rows[0]
    # Content is PHI: an operator reads it only by breaking the glass for that message's patient.
    code, _, err = _run("quarantine", "show", str(fixed), "--data", str(tmp_path), "--json")
    assert code != 0
    assert "break the glass" in err
    reason = ("--reason", "message_investigation", "--secrets-stdin")
    code, _, err = _run("break-glass", "GENHOSP|MRN42", *reason, "--data", str(tmp_path), secret=PASSWORD + "\n")
    assert code == 0, err
    code, out, _ = _run("quarantine", "show", str(fixed), "--data", str(tmp_path), "--json")
    assert code == 0
    assert json.loads(out)["raw_base64"]
    code, _, err = _run("quarantine", "show", str(still_bad), "--data", str(tmp_path), "--json")
    assert code != 0  # no readable patient: the grant for another patient does not cover it
    code, _, err = _run("quarantine", "retry", str(still_bad), "--data", str(tmp_path))
    assert code != 0
    assert "still refused" in err
    code, out, _ = _run("quarantine", "retry", str(fixed), "--data", str(tmp_path))
    assert code == 0, out
    # After the audit trail: the login, the refused show, the break-the-glass, two shows, the refused retry.
    assert "accepted at LSN 7" in out

    async def logged() -> list[tuple[str, bytes]]:
        async with open_wal(tmp_path / "wal") as wal:
            return [(r.envelope.message_type, r.envelope.raw) for r in wal.read_from(1)]

    records = anyio.run(logged)
    assert [raw for kind, raw in records if kind != "AUDIT^ACCESS"] == [oru("OBX|1|NM|K||4.1|||N")]
    assert len(records) == 8  # and the retry's own audit event after it
    code, out, _ = _run("quarantine", "list", "--data", str(tmp_path), "--json")
    assert [json.loads(line)["qid"] for line in out.splitlines()] == [still_bad]
    code, _, err = _run("quarantine", "retry", str(fixed), "--data", str(tmp_path))
    assert "already resolved" in err


def test_quarantine_show_unknown_item(tmp_path: Path) -> None:
    """An id that does not exist: one line, non-zero."""
    code, _, err = _run("quarantine", "show", "99", "--data", str(tmp_path))
    assert code != 0
    assert "no quarantined item 99" in err
