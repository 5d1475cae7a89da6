"""Text from a message is data in the terminal: never console markup, never a control sequence.

`[/]` in a message type crashed `vigil log`, `[/bold]` in a name crashed
`vigil patient`, LOINC names lost their brackets, `[link=...]` became a link,
and ESC sequences reached the operator's terminal. Every CLI console is a
`DataConsole` now, and error reasons are inert where they are made.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import unicodedata
from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st
from rich.table import Table

from actors import PatientRecord
from engine.auth import Role
from engine.cli.console import DataConsole
from engine.cli.ops import _print_record
from engine.core.errors import HL7Error
from engine.core.inert import inert
from engine.core.model import Admitted, Coded, DemographicsUpdated, ResultReported
from tests.harness.helpers import hl7
from tests.harness.sessions import sign_in

ROOT = Path(__file__).resolve().parents[2]
VIGIL = str(ROOT / "bin" / "vigil")
# Anything a terminal would act on: C0 but newline, DEL, C1, and the bidirectional controls.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
ESC = "\x1b"


def _render(*cells: str) -> str:
    console = DataConsole(width=400, force_terminal=False, color_system=None)
    table = Table()
    for n in range(len(cells)):
        table.add_column(f"c{n}")
    table.add_row(*cells)
    with console.capture() as captured:
        console.print(table)
        for cell in cells:
            console.print(cell)
    return captured.get()


@given(st.lists(st.text(max_size=40), min_size=1, max_size=4))
def test_any_text_renders_as_inert_data(cells: list[str]) -> None:
    """No field of any content crashes a table, nor leaves a control character in what reaches the terminal."""
    out = _render(*cells)
    assert _CONTROL.search(out) is None
    for cell in cells:
        visible = "".join(c for c in inert(cell) if unicodedata.category(c)[0] not in "CZ")
        assert visible in "".join(c for c in out if unicodedata.category(c)[0] not in "CZ")


def test_markup_and_escapes_in_cells_show_as_written() -> None:
    """The brackets of a LOINC name, markup look-alikes and an ESC sequence come out as text."""
    out = _render("Eosinophils [#/volume] in Blood", "[/]", "[link=https://example.org]x[/link]", f"{ESC}[2J")
    assert "Eosinophils [#/volume] in Blood" in out
    assert "[link=https://example.org]x[/link]" in out
    assert "\\x1b[2J" in out
    assert ESC not in out


def test_an_error_reason_is_inert_where_it_is_made() -> None:
    """A reason quoting the message (ACK ERR, quarantine, logs) carries no control character."""
    assert HL7Error(f"unknown escape \\{ESC}]8;;\\").reason == "unknown escape \\\\x1b]8;;\\"


def _cli(data: Path, *args: str) -> str:
    proc = subprocess.run([VIGIL, *args, "--data", str(data)], capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = proc.stdout.decode()
    assert ESC not in out
    assert "Traceback" not in proc.stderr.decode()
    return out


def test_log_patient_quarantine_and_inspect_show_hostile_text_as_data(tmp_path: Path) -> None:
    """The commands that crashed or were hijacked before now print the text as written, escapes visible."""
    msh = "MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|20261124101500||ZZZ^Z01[/]|C{n}|P|2.5.1"
    pid = f"PID|1||MRN9^^^GENHOSP^MR||[/bold]Doe{ESC}[2J^Jane||19700101|F"
    feed = b"".join(
        [
            hl7(msh.format(n=1), pid),
            hl7(msh.format(n=2).replace("ZZZ^Z01[/]", "ADT^A08"), pid),
            hl7(
                msh.format(n=3).replace("ZZZ^Z01[/]", "ORU^R01"),
                pid,
                "OBR|1|P1|F1|CBC",
                "OBX|1|NM|711-2^Eosinophils [#/volume] in Blood^LN||0.2|10*3/uL|||N|||F",
            ),
            hl7(msh.format(n=4).replace("ZZZ^Z01[/]", "ADT^A01"), f"PID|1||^^^X||[/]{ESC}]8;;x{ESC}\\"),
        ]
    )
    feed_file = tmp_path / "feed.hl7"
    feed_file.write_bytes(feed)
    data = tmp_path / "data"
    subprocess.run(
        [VIGIL, "run", "--stdin", "--data", str(data)], input=feed, capture_output=True, timeout=120, check=False
    )
    sign_in(data, "op.ada", Role.OPERATOR, Role.CLINICIAN)
    assert "ZZZ^Z01[/]" in _cli(data, "log")
    record = _cli(data, "patient", "GENHOSP|MRN9")
    assert "[/bold]Doe\\x1b[2J" in record
    assert "Eosinophils [#/volume] in Blood" in record
    assert "1" in _cli(data, "quarantine", "list")
    inspected = subprocess.run([VIGIL, "inspect", str(feed_file)], capture_output=True, timeout=120, check=False)
    assert ESC.encode() not in inspected.stdout
    assert b"ZZZ^Z01[/]" in inspected.stdout


_FIELD = st.text(max_size=30)


@given(family=_FIELD, given_name=_FIELD, location=_FIELD, code_text=_FIELD, value=_FIELD, units=_FIELD)
def test_a_patient_record_of_any_text_prints_inert(
    *, family: str, given_name: str, location: str, code_text: str, value: str, units: str
) -> None:
    """`vigil patient`'s view, every field made by hypothesis: no crash, no control character reaches the terminal."""
    events = (
        DemographicsUpdated(family=family, given=(given_name,)),
        Admitted(encounter_id="V1", location=location),
        ResultReported("k1", Coded("2823-3", code_text), value=value, units=units, abnormal_flags=("HH",)),
    )
    record = PatientRecord.empty("H|1").apply(1, "2026-11-24T10:00:00+00:00", "m1", events)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _print_record(msgspec.to_builtins(record.view()), as_of=None, known_at=None)
    assert _CONTROL.search(out.getvalue()) is None


def test_every_cli_console_is_a_data_console() -> None:
    """No CLI module prints through a plain rich Console or parses markup from a string."""
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        text = path.read_text()
        for pattern in (r"(?<!Data)Console\(", r"from_markup\(", r"markup=True"):
            offenders += [f"{path.name}: {pattern}" for _ in re.finditer(pattern, text)]
    assert [o for o in offenders if not o.startswith(("cli_console.py", "demo.py"))] == []
