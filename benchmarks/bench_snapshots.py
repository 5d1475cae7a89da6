"""Patient snapshots at a hospital's scale: the packed store (one SQLite file) against a folder per patient.

N patients each get one snapshot of about a kilobyte (a record's state), saved
one call at a time as passivating actors do; then the store is opened again
(a node's start) and 10,000 random patients are asked whether they have a
snapshot and loaded. Reported per store: saves/s, disk used, files created,
the open time and loads/s. The directory store runs in the same process at
`--compare` patients (creating a million folders is the problem this
answers); the packed store at `--patients` (1,000,000 in the full run).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table

from engine.wal import OSFiles, PackedSnapshotStore, Snapshot, Snapshots, SnapshotStore

_STATE = bytes(random.Random(7).randbytes(1000))  # about a record's state; incompressible, as msgpack is


def main() -> None:
    def more(parser: Any) -> None:
        parser.add_argument("--patients", type=int, help="patients for the packed store")
        parser.add_argument("--compare", type=int, help="patients for both stores, side by side")

    args = arguments(__doc__ or "", more)
    patients = args.patients or (5_000 if args.quick else 1_000_000)
    compare = args.compare or (5_000 if args.quick else 50_000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows.append(_measure("packed", compare, root / "p1", PackedSnapshotStore))
        rows.append(_measure("a folder per patient", compare, root / "d1", SnapshotStore))
        if patients > compare:
            rows.append(_measure("packed", patients, root / "p2", PackedSnapshotStore))
    table = Table(title="Patient snapshots: one file against a folder per patient")
    for name in ("store", "patients", "saves/s", "disk MB", "files", "open ms", "loads/s"):
        table.add_column(name, justify="left" if name == "store" else "right")
    for r in rows:
        table.add_row(
            r["store"],
            f"{r['patients']:,}",
            f"{r['saves_per_s']:,.0f}",
            f"{r['disk_bytes'] / 1e6:,.1f}",
            f"{r['files']:,}",
            f"{r['open_ms']:.1f}",
            f"{r['loads_per_s']:,.0f}",
        )
    console = Console()
    console.print(table)
    packed, folders = rows[0], rows[1]
    ratio = packed["saves_per_s"] / folders["saves_per_s"]
    console.print(f"at {compare:,} patients: packed saves {ratio:.2f}x as fast, {folders['files']:,} files -> "
                  f"{packed['files']:,}")  # fmt: skip
    fail_if(any(r["loads_per_s"] <= 0 for r in rows), "nothing was loaded")
    if args.json:
        args.json.write_bytes(msgspec.json.encode({"rows": rows, "packed_over_folders_saves": round(ratio, 2)}))


def _measure(name: str, patients: int, directory: Path, make: Callable[[Path, OSFiles], Snapshots]) -> dict[str, Any]:
    store = make(directory, OSFiles())
    keys = [f"GENHOSP|MRN{n:08d}" for n in range(patients)]
    started = time.perf_counter()
    for lsn, key in enumerate(keys, start=1):
        store.save(Snapshot(key, lsn, "2026-12-06T08:00:00+00:00", _STATE))
    saves_s = time.perf_counter() - started
    _close(store)
    started = time.perf_counter()
    store = make(directory, OSFiles())  # a node's start
    store.exists(keys[0])
    open_s = time.perf_counter() - started
    asked = random.Random(1).sample(keys, min(10_000, patients))
    started = time.perf_counter()
    loaded = sum(1 for key in asked if store.exists(key) and store.load(key) is not None)
    loads_s = time.perf_counter() - started
    _close(store)
    fail_if(loaded != len(asked), f"{name}: {len(asked) - loaded} snapshots not found")
    files = [Path(d, f) for d, _dirs, names in os.walk(directory) for f in names]
    dirs = sum(len(d) for _r, d, _f in os.walk(directory))
    return {
        "store": name,
        "patients": patients,
        "saves_per_s": round(patients / saves_s),
        "disk_bytes": sum(f.stat().st_size for f in files),
        "files": len(files) + dirs,
        "open_ms": round(open_s * 1000, 2),
        "loads_per_s": round(len(asked) / loads_s),
    }


def _close(store: Snapshots) -> None:
    if isinstance(store, PackedSnapshotStore):
        store.close()


if __name__ == "__main__":
    main()
