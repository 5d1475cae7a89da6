"""Packed snapshots: the directory store's contract in one SQLite file, and a directory store's data read on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.wal import PACKED_FILE, OSFiles, PackedSnapshotStore, Snapshot, SnapshotStore

KEY = "GENHOSP|MRN42"


def test_the_newest_valid_snapshot_wins_and_the_oldest_go(tmp_path: Path) -> None:
    store = PackedSnapshotStore(tmp_path, OSFiles(), keep=2)
    for lsn in (10, 20, 30):
        store.save(Snapshot(KEY, lsn, "t", f"state@{lsn}".encode()))
    assert store.load(KEY) == Snapshot(KEY, 30, "t", b"state@30")
    assert store.load(KEY, at_most_lsn=25) == Snapshot(KEY, 20, "t", b"state@20")
    assert store.count() == 2  # 10 pruned
    assert store.exists(KEY)
    assert not store.exists("GENHOSP|nobody")
    assert store.load("GENHOSP|nobody") is None
    store.close()
    with sqlite3.connect(tmp_path / PACKED_FILE) as db:  # a damaged body: the one before it is used
        [(body,)] = db.execute("SELECT body FROM snapshots WHERE lsn = 30").fetchall()
        damaged = bytes(body[:-1]) + bytes([body[-1] ^ 0xFF])
        db.execute("UPDATE snapshots SET body = ? WHERE lsn = 30", (damaged,))
    again = PackedSnapshotStore(tmp_path, OSFiles(), keep=2)
    loaded = again.load(KEY)
    assert loaded is not None
    assert loaded.lsn == 20
    again.close()


def test_one_file_whatever_the_patients_and_no_identifier_in_its_keys(tmp_path: Path) -> None:
    store = PackedSnapshotStore(tmp_path, OSFiles())
    for n in range(500):
        store.save(Snapshot(f"GENHOSP|MRN{n:06d}", n + 1, "t", b"x" * 100))
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(PACKED_FILE)) == []
    with sqlite3.connect(tmp_path / PACKED_FILE) as db:
        keys = [row[0] for row in db.execute("SELECT key_hash FROM snapshots")]
    assert len(keys) == 500
    assert not any("MRN" in k for k in keys)


def test_a_directory_stores_snapshots_are_read_until_the_key_has_a_packed_one(tmp_path: Path) -> None:
    old = SnapshotStore(tmp_path, OSFiles())
    old.save(Snapshot(KEY, 7, "t", b"from the folder"))
    store = PackedSnapshotStore(tmp_path, OSFiles())
    assert store.exists(KEY)
    assert store.load(KEY) == Snapshot(KEY, 7, "t", b"from the folder")
    store.save(Snapshot(KEY, 9, "t", b"packed"))
    assert not any(p.suffix == ".snap" for p in tmp_path.rglob("*"))  # the folder went
    assert store.load(KEY) == Snapshot(KEY, 9, "t", b"packed")
    store.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A|1", "A|2", "B|1"]), st.integers(1, 50)), max_size=30))
def test_it_answers_as_the_directory_store_does(
    tmp_path_factory: pytest.TempPathFactory, saves: list[tuple[str, int]]
) -> None:
    """The same saves into both: the same answers for every key and every bound."""
    base = tmp_path_factory.mktemp("both")
    folders, packed = SnapshotStore(base / "dirs", OSFiles()), PackedSnapshotStore(base / "packed", OSFiles())
    for key, lsn in saves:
        for store in (folders, packed):
            store.save(Snapshot(key, lsn, "t", f"{key}@{lsn}".encode()))
    for key in ("A|1", "A|2", "B|1", "C|9"):
        assert packed.exists(key) == folders.exists(key)
        for bound in (None, 10, 25, 50):
            assert packed.load(key, at_most_lsn=bound) == folders.load(key, at_most_lsn=bound)
    packed.close()
