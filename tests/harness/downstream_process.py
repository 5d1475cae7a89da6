"""A downstream system's process, from the test's side: started on a port it reports, killed by SIGKILL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import final

__all__ = ["DownstreamProcess"]


@final
class DownstreamProcess:
    """`python -m MODULE --port P --record FILE --control FILE`, which prints `listening on PORT` once bound."""

    def __init__(self, module: str, record: Path, control: Path) -> None:
        self._module = module
        self._record = record
        self._control = control
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        """Start (or start again on the same port); returns the port."""
        args = [sys.executable, "-m", self._module, "--port", str(self.port)]
        args += ["--record", str(self._record), "--control", str(self._control)]
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
