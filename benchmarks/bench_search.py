"""Message search on a large log: the index against a scan of the log, the same queries, the same run.

A log of N messages (1,000,000 in the full run) from 60 senders, five
message types, the three lanes and 1% reused control ids is written through
the real log (`open_wal`); the search index is built from its files as the
CLI would catch it up (records/s, bytes per message); then each query is
answered by the index (`SearchIndex.search`: every row, median of 5; and
the first 1,000, as `vigil log` shows by default) and by a scan of
the log with the same criteria (`iter_records` + `SearchQuery.matches`,
once), and the ratio reported. Both must find the same rows.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
from _harness import arguments, fail_if
from rich.console import Console
from rich.table import Table

from engine.core.identity import hl7_digest
from engine.core.model import Envelope, Kind, Lane, Unrecognized
from engine.infra.config import WalConfig
from engine.infra.logging_setup import configure_logging
from engine.search import INDEX_FILE, Outcome, SearchIndex, SearchQuery, catch_up_files, decode_row, row_of
from engine.wal import OSFiles, iter_records, open_wal

_TYPES = ("ORU^R01", "ADT^A01", "ADT^A08", "DFT^P03", "RDE^O11")
_LANES = (Lane.STANDARD, Lane.STANDARD, Lane.BATCH, Lane.BATCH, Lane.CRITICAL)
_BATCH = 2_000
_CLI_LIMIT = 1_000  # what `vigil log` shows by default


def _envelope(n: int) -> Envelope:
    reused = n % 100 == 99  # 1%: the previous message's sender and control id again, other content
    base = n - 1 if reused else n
    app, fac, control = f"APP{base % 20}", f"FAC{base % 3}", f"C{base}"
    mtype = _TYPES[n % len(_TYPES)]
    raw = f"MSH|^~\\&|{app}|{fac}|VIGIL|H|2026||{mtype}|{control}|P|2.5.1\rPID|1||{n}^^^H^MR\r".encode()
    return Envelope(
        f"hl7:{app}|{fac}|{control}",
        Kind.HL7V2,
        mtype,
        f"H|{n % 50_000}",
        _LANES[(n // 7) % len(_LANES)],
        "bench",
        "2026-12-05T10:00:00+00:00",
        "bench",
        raw,
        (Unrecognized(mtype, str(n)),),
        digest=hl7_digest(raw),  # so a reused control id is a new message, as the node would see it
    )


async def _write(wal_dir: Path, count: int) -> None:
    async with open_wal(wal_dir, WalConfig()) as wal:
        for start in range(0, count, _BATCH):
            await wal.append([_envelope(n) for n in range(start, min(start + _BATCH, count))])


def _scan(wal_dir: Path, query: SearchQuery) -> list[int]:
    """The LSNs a scan of the whole log finds (outcomes aside: a scan cannot tell a reused id)."""
    return [r.lsn for r in map(row_of, iter_records(wal_dir, OSFiles(), decode=decode_row)) if query.matches(r)]


def main() -> None:
    args = arguments(__doc__ or "", lambda p: p.add_argument("--messages", type=int))
    count = args.messages or (20_000 if args.quick else 1_000_000)
    configure_logging("error")  # one warning per reused control id would bury the table
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        anyio.run(_write, root / "wal", count)
        write_s = time.perf_counter() - started
        index = SearchIndex.of(root)
        started = time.perf_counter()
        indexed = catch_up_files(index, root / "wal")
        index_s = time.perf_counter() - started
        fail_if(indexed != count, f"indexed {indexed} of {count}")
        index_bytes = sum(p.stat().st_size for p in root.glob(f"{INDEX_FILE}*"))
        log_bytes = sum(p.stat().st_size for p in (root / "wal").glob("*.seg"))
        middle = index.search(SearchQuery(from_lsn=count // 2), limit=1)[0].at
        later = index.search(SearchQuery(from_lsn=count // 2 + count // 20), limit=1)[0].at
        queries = {
            "--control-id C123456": SearchQuery(control_id=f"C{min(123_456, count - 2)}"),
            "--sender APP7^FAC1 --type ADT^A08": SearchQuery(sender="APP7^FAC1", message_type="ADT^A08"),
            "--type ADT^* --lane critical": SearchQuery(message_type="ADT^*", lane="critical"),
            "--since/--until (5% of the log) --lane critical": SearchQuery(since=middle, until=later, lane="critical"),
            "--outcome reused": SearchQuery(outcomes=frozenset({Outcome.REUSED})),
        }
        rows: list[dict[str, Any]] = []
        for name, query in queries.items():
            times, found = [], []
            for _ in range(5):
                t = time.perf_counter()
                found = index.search(query, limit=count)
                times.append(time.perf_counter() - t)
            index_ms = statistics.median(times) * 1000
            t = time.perf_counter()
            index.search(query, limit=_CLI_LIMIT)
            first_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            scanned = _scan(root / "wal", query) if query.outcomes != {Outcome.REUSED} else None
            scan_ms = (time.perf_counter() - t) * 1000
            if scanned is not None:
                fail_if([r.lsn for r in found] != scanned, f"{name}: rows differ")
            rows.append(
                {
                    "query": name,
                    "found": len(found),
                    "index_ms": round(index_ms, 2),
                    "index_first_1000_ms": round(first_ms, 2),
                    "scan_ms": round(scan_ms, 1) if scanned is not None else None,
                    "scan_over_index": round(scan_ms / index_ms, 1) if scanned is not None else None,
                }
            )
        index.close()
    table = Table(title=f"Message search on a log of {count:,} messages")
    for column in ("query", "found", "index ms: all", "first 1,000", "scan ms", "scan / index"):
        table.add_column(column, justify="left" if column == "query" else "right")
    for row in rows:
        table.add_row(
            row["query"],
            f"{row['found']:,}",
            f"{row['index_ms']:.2f}",
            f"{row['index_first_1000_ms']:.2f}",
            "-" if row["scan_ms"] is None else f"{row['scan_ms']:,.0f}",
            "-" if row["scan_over_index"] is None else f"{row['scan_over_index']:,.0f}x",
        )
    console = Console()
    console.print(table)
    console.print(
        f"log written in {write_s:.1f} s ({log_bytes / count:.0f} bytes/message); index built from the files in "
        f"{index_s:.1f} s ({count / index_s:,.0f} records/s), {index_bytes / count:.0f} bytes/message"
    )
    if args.json:
        doc = {
            "messages": count,
            "index_build_s": round(index_s, 2),
            "index_records_per_s": round(count / index_s),
            "index_bytes_per_message": round(index_bytes / count),
            "log_bytes_per_message": round(log_bytes / count),
            "queries": rows,
        }
        args.json.write_bytes(msgspec.json.encode(doc))


if __name__ == "__main__":
    main()
