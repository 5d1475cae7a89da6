"""The README's first hour, run as written on a fresh data directory: if a step there breaks, this fails.

The block under "The first hour" is read from README.md and run in one
bash, line by line, with only what a person at a terminal supplies: a free
port for 2575, a folder of messages for `path/to/messages/`, a patient key
for `'AUTHORITY|ID'`, the data directory in a temporary folder, the secrets
typed at each prompt, and a wait for the node to listen before sending.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.harness.helpers import hl7
from tests.harness.node_process import ROOT

PASSWORD, PIN = "correct horse battery staple", "4321"


def _first_hour() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## The first hour", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].rstrip() for line in block.splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _messages(folder: Path) -> None:
    folder.mkdir()
    for n in range(1, 6):
        msh = f"MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261201101500||ORU^R01^ORU_R01|WALK{n}|P|2.5.1"
        pid = "PID|1||MRN42^^^GENHOSP^MR||Doe^Jane||19700101|F"
        obx = f"OBX|1|NM|2823-3^K^LN||4.{n}|mmol/L|3.5-5.1|N|||F"
        (folder / f"result-{n}.hl7").write_bytes(hl7(msh, pid, "OBR|1|P1|F1|80048^BMP^CPT", obx))


def _as_typed(line: str, tmp: Path, port: int) -> str:
    """One README line with what a person supplies (the command itself unchanged)."""
    line = line.replace("$PWD/vigil-data", str(tmp / "vigil-data"))
    line = line.replace("127.0.0.1:2575", f"127.0.0.1:{port}")
    line = line.replace("path/to/messages/", f"{tmp / 'messages'}/")
    line = line.replace("'AUTHORITY|ID'", "'GENHOSP|MRN42'")
    if re.search(r"vigil user add ", line):
        line += f" <<< $'{PASSWORD}\\n{PIN}'"
    elif re.search(r"vigil login ", line):
        line += f" <<< '{PASSWORD}'"
    if re.search(r"vigil run .*&$", line):  # a person waits for "listening on" before going on
        line += f"\nuntil (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; do sleep 0.1; done"
    return line


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the README makes the audit key with openssl")
def test_the_first_hour_runs_as_the_readme_says(tmp_path: Path) -> None:
    lines = _first_hour()
    assert any("vigil run" in line for line in lines)
    assert any("audit verify" in line for line in lines)
    _messages(tmp_path / "messages")
    port = _free_port()
    script = "set -euo pipefail\n" + "\n".join(_as_typed(line, tmp_path, port) for line in lines) + "\n"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    out = done.stdout
    assert done.returncode == 0, f"{done.stderr[-3000:]}\n{out[-3000:]}"
    assert "5 sent: AA 5" in out  # vigil send's summary
    assert "added admin: administrator (the first administrator)" in out
    assert "logged in as dr.osei" in out
    assert re.search(r"5\s+\S+ \S+\s+standard\s+ORU\^R01\s+LAB\^GENHOSP\s+WALK5", out)  # vigil log's last row
    assert "result K: 4.5 mmol/L" in out  # vigil patient: the potassium now, with its versions
    assert "the hash chain from genesis" in out
    assert "1 keyed checkpoint(s) checked" in out  # the clean stop sealed the log with the key
