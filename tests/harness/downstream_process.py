"""A downstream system's process, from the test's side: started on a port it reports, told how to answer, killed.

The process runs `python -m MODULE --port P --record FILE --control FILE`,
prints `listening on PORT` once bound, appends what it accepts to the record
file, and reads the control file (JSON: `mode`, `refuse`) before each answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["DownstreamProcess"]


class DownstreamProcess:
    """The process's life and its control file; a receiver adds how to read its record."""

    def __init__(self, module: str, record: Path, control: Path, mode: str, port: int = 0) -> None:
        self._module = module
        self.record = record
        self.control = control
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self.set_mode(mode)

    def start(self) -> int:
        """Start (or start again on the same port); returns the port."""
        args = [sys.executable, "-m", self._module, "--port", str(self.port)]
        args += ["--record", str(self.record), "--control", str(self.control)]
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode()
        assert line.startswith("listening on"), f"{self._module} did not start: {line!r}"
        self.port = int(line.split()[-1])
        return self.port

    def kill(self) -> None:
        """SIGKILL: the downstream system is gone, its connections with it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

    def set_mode(self, mode: str, refuse: tuple[str, ...] = ()) -> None:
        """How to answer from the next message on (the file is replaced whole: never read half written)."""
        temp = self.control.with_suffix(".tmp")
        temp.write_text(json.dumps({"mode": mode, "refuse": list(refuse)}))
        os.replace(temp, self.control)
