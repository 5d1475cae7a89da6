"""A progress bar for long log scans (recovery, verification), on a terminal only.

On a terminal, stderr shows a bar that goes away when done; elsewhere (a
pipe, a service's journal, a test) nothing is drawn, so no output is
garbled by it. The callback may be called from a worker thread: rich's
Progress is thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from engine.cli.console import DataConsole
from engine.wal import Progress as ScanProgress

__all__ = ["scan_progress"]


@contextmanager
def scan_progress(label: str) -> Iterator[ScanProgress | None]:
    """Yield a (bytes done, bytes in all) callback drawing a bar, or None when stderr is not a terminal."""
    console = DataConsole(stderr=True)
    if not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
