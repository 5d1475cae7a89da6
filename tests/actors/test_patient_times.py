"""`vigil patient --as-of/--as-known-at` read times strictly: ISO 8601, UTC without an offset, else refused."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import parse_moment
from tests.harness.helpers import hl7
from tests.harness.sessions import sign_in

ROOT = Path(__file__).resolve().parents[2]
VIGIL = str(ROOT / "bin" / "vigil")


_FIRST, _LAST = datetime(1900, 1, 1), datetime(2100, 1, 1)  # noqa: DTZ001 -- hypothesis wants naive bounds


@given(st.datetimes(min_value=_FIRST, max_value=_LAST, timezones=st.just(UTC)))
def test_any_iso_time_reads_back_as_the_same_moment(moment: datetime) -> None:
    """With an offset, with Z, with a space for the T: the same instant, in UTC."""
    text = moment.isoformat()
    assert datetime.fromisoformat(parse_moment(text)) == moment
    assert parse_moment(text.replace("+00:00", "Z")) == parse_moment(text)
    assert parse_moment(text.replace("T", " ")) == parse_moment(text)


@pytest.mark.parametrize("text", ["12/01/2026", "garbage", "", "2026-02-30", "2026-12-01T25:00", "2026-12-01 and more"])
def test_anything_else_is_refused_with_the_rule(text: str) -> None:
    """Refused, saying what is accepted, never compared as a string."""
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_moment(text)


def test_a_local_looking_time_and_a_bad_one_on_the_command_line(tmp_path: Path) -> None:
    """`2015-02-08 23:00` includes that morning's admission; `12/01/2026` is refused in one line (exit 2)."""
    admit = hl7(
        "MSH|^~\\&|ADT|GENHOSP|VIGIL|GENHOSP|20150208080000||ADT^A01^ADT_A01|A1|P|2.5.1",
        "PID|1||MRN5^^^GENHOSP^MR||Doe^Jane||19700101|F",
        "PV1|1|I|W1^101^A|||||||||||||||V1|||||||||||||||||||||||||20150208080000",
    )
    subprocess.run([VIGIL, "run", "--stdin", "--data", str(tmp_path)], input=admit, capture_output=True, check=True)
    sign_in(tmp_path, "dr.lee")

    def patient(*args: str) -> subprocess.CompletedProcess[bytes]:
        command = [VIGIL, "patient", "GENHOSP|MRN5", "--data", str(tmp_path), *args]
        return subprocess.run(command, capture_output=True, timeout=120, check=False)

    evening = patient("--as-of", "2015-02-08 23:00", "--json")
    assert evening.returncode == 0, evening.stderr
    assert len(json.loads(evening.stdout)["encounters"]) == 1
    before = patient("--as-of", "2015-02-08T07:59:59Z", "--json")
    assert json.loads(before.stdout)["encounters"] == []
    for bad in ("12/01/2026", "garbage"):
        refused = patient("--as-of", bad)
        assert refused.returncode == 2
        assert b"is not a time" in refused.stderr
        assert b"Traceback" not in refused.stderr
