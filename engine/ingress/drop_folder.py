"""The drop folder (`vigil run --watch DIR`): each file dropped there is ingested, then moved aside.

A file goes to `done/` when every message in it was accepted, else to
`failed/` beside a `NAME.reason.json` that says what became of each message.
Only files untouched for a poll interval are taken (a sender still writing
one is left alone); names starting with "." or ending in .tmp/.part are
ignored. Nothing is ever deleted or overwritten: a file sent again under a
name already in `done/` or `failed/` is kept as `NAME.2`, `NAME.3`...; a file
larger than `ingest.input_bytes_max` goes to `failed/` unread.

The folder is handed what it needs, not the node: its limits and a callable
that ingests one whole input and answers each message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import final

import anyio
import msgspec
import structlog

from engine.core.outcome import IngestResult, Outcome
from engine.infra.clock import epoch_s
from engine.infra.config import IngestConfig

__all__ = ["DropFolder", "IngestStream"]

_log = structlog.get_logger("vigil.node")

# One whole input (its bytes, its source name) -> what became of each message, in order.
IngestStream = Callable[[bytes, str], Awaitable[list[IngestResult]]]


@final
class DropFolder:
    """Watches one folder until cancelled."""

    def __init__(self, folder: Path, config: IngestConfig, ingest: IngestStream) -> None:
        self.folder = folder
        self.config = config
        self._ingest = ingest

    async def watch(self) -> None:
        """Take each ready file, oldest first, every poll interval."""
        interval = self.config.watch_poll_interval_s
        while True:
            for path in await anyio.to_thread.run_sync(_ready_files, self.folder, interval):
                await self._take(path)
            await anyio.sleep(interval)

    async def _take(self, path: Path) -> None:
        limit = self.config.input_bytes_max
        size = (await anyio.to_thread.run_sync(path.stat)).st_size
        if size > limit:  # not read at all: the file itself, moved to failed/, keeps every byte
            reason = f"file of {size:,} bytes is larger than {limit:,} (ingest.input_bytes_max): not read"
            results = [IngestResult(Outcome.REJECTED, error={"type": "InputTooLarge", "reason": reason})]
        else:
            raw = await anyio.to_thread.run_sync(path.read_bytes)
            results = await self._ingest(raw, f"file:{path.name}")
        accepted = bool(results) and all(r.outcome is Outcome.ACCEPTED for r in results)
        target = self.folder / ("done" if accepted else "failed")
        kept_as = await anyio.to_thread.run_sync(_move, path, target, None if accepted else results)
        _log.info("node.file_ingested", file=path.name, messages=len(results), moved_to=f"{target.name}/{kept_as}")


def _move(path: Path, target: Path, refused: list[IngestResult] | None) -> str:
    """Move `path` into `target` under a free name (with its reason file when `refused`); the name."""
    target.mkdir(exist_ok=True)
    name = _free_name(target, path.name)
    if refused is not None:
        reason = target / f"{name}.reason.json"
        reason.write_bytes(msgspec.json.encode(refused or [{"outcome": "empty file"}]))
    path.replace(target / name)
    return name


def _free_name(folder: Path, name: str) -> str:
    """`name`, or `stem.2.suffix`, `stem.3.suffix`...: the first that neither it nor its reason file takes."""
    stem, dot, suffix = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    candidate, n = name, 1
    while (folder / candidate).exists() or (folder / f"{candidate}.reason.json").exists():
        n += 1
        candidate = f"{stem}.{n}{dot}{suffix}" if dot else f"{name}.{n}"
    return candidate


def _ready_files(folder: Path, settle_s: float) -> list[Path]:
    """Regular files in the folder, untouched for `settle_s`, oldest first."""
    now = epoch_s()
    found = [
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and not p.name.endswith((".tmp", ".part"))
        and now - p.stat().st_mtime >= settle_s
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime)
