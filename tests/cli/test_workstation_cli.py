"""`vigil workstation`: an administrator binds devices to their settings; anyone else is refused; audited."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from engine.auth import Role
from tests.harness.node_process import ROOT, VIGIL, log_records
from tests.harness.sessions import sign_in


def _vigil(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VIGIL, *args, "--data", str(data)], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )


def test_an_administrator_registers_lists_and_forgets_a_workstation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sign_in(data, "admin.lee", Role.ADMINISTRATOR)  # no node runs: the CLI decides over the store, audited
    done = _vigil(data, "workstation", "register", "browser-0f3a", "--setting", "ward", "--name", "Ward 7 desk")
    assert done.returncode == 0, done.stderr
    assert "registered browser-0f3a: ward" in done.stdout
    [listed] = json.loads(_vigil(data, "workstation", "list", "--json").stdout)
    assert (listed["device"], listed["setting"], listed["name"], listed["registered_by"]) == (
        "browser-0f3a",
        "ward",
        "Ward 7 desk",
        "admin.lee",
    )
    assert _vigil(data, "workstation", "forget", "browser-0f3a").returncode == 0
    assert json.loads(_vigil(data, "workstation", "list", "--json").stdout) == []
    bad = _vigil(data, "workstation", "register", "browser-0f3a", "--setting", "beach")
    assert bad.returncode == 2  # click names the choices
    actions = [e.action for r in log_records(data) for e in r.envelope.events if hasattr(e, "action")]
    assert "workstation_register" in actions
    assert "workstation_forget" in actions


def test_a_clinician_may_not_register_a_workstation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sign_in(data, "admin.lee", Role.ADMINISTRATOR)
    sign_in(data, "dr.osei", Role.CLINICIAN)
    refused = _vigil(data, "workstation", "register", "browser-0f3a", "--setting", "office")
    assert refused.returncode == 1
    assert "user.manage" in refused.stderr
