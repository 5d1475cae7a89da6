"""Every CLI failure is one line and an exit code, never a traceback."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.auth import Role
from engine.cli.main import global_options_first
from tests.harness.helpers import PID, hl7
from tests.harness.sessions import sign_in

ROOT = Path(__file__).resolve().parents[2]
VIGIL = str(ROOT / "bin" / "vigil")


def _fails_in_one_line(*args: str, code: int = 1) -> str:
    proc = subprocess.run([VIGIL, *args], capture_output=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    return err


def _a_log(data: Path) -> None:
    msh = "MSH|^~\\&|ADT|GENHOSP|VIGIL|GENHOSP|20261124101500||ADT^A01^ADT_A01|C1|P|2.5.1"
    subprocess.run([VIGIL, "run", "--stdin", "--data", str(data)], input=hl7(msh, PID), capture_output=True, check=True)
    sign_in(data, "op.sam", Role.OPERATOR)


def test_a_port_out_of_range_is_refused_in_one_line(tmp_path: Path) -> None:
    err = _fails_in_one_line("run", "--mllp", "127.0.0.1:99999", "--data", str(tmp_path), code=2)
    assert "the port must be 0 to 65535" in err


def test_a_truncated_log_is_named_not_a_traceback(tmp_path: Path) -> None:
    _a_log(tmp_path)
    [segment] = (tmp_path / "wal").glob("*.seg")
    with segment.open("r+b") as f:
        f.truncate(40)
    err = _fails_in_one_line("log", "--data", str(tmp_path))
    assert err.startswith("Error: ")
    assert "vigil wal verify" in err
    assert len(err.strip().splitlines()) == 1


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[Path]:
    """`folder` seen through a read-only bind mount (root only: skipped where mounting is not allowed)."""
    view = folder.parent / f"{folder.name}-ro"
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("a read-only bind mount needs root and mount(8)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True, check=True)
        yield view
    finally:
        subprocess.run(["umount", str(view)], capture_output=True, check=False)


def test_a_read_only_log_is_refused_in_one_line_since_each_look_is_recorded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _a_log(data)
    with _read_only(data) as view:
        err = _fails_in_one_line("log", "--data", str(view))
    assert "cannot write to the log" in err
    assert "Read-only file system" in err


def test_cluster_status_against_an_unreachable_nats_answers_at_once() -> None:
    """No NATS on the port: one line (exit 1) within the connect deadline, not minutes of retries."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    err = _fails_in_one_line("cluster", "status", "--nats", f"nats://127.0.0.1:{port}")
    assert "cannot reach NATS" in err
    assert time.monotonic() - started < 20


def test_config_after_the_subcommand_is_read_as_before_it(tmp_path: Path) -> None:
    """`vigil wal verify --config F` and `vigil --config F wal verify` read the same file (issue 20)."""
    config = tmp_path / "site.toml"
    config.write_text('[node]\ndata_dir = "site-data"\n')
    before = _fails_in_one_line("--config", str(config), "wal", "verify")
    after = _fails_in_one_line("wal", "verify", "--config", str(config))
    joined = _fails_in_one_line("wal", "verify", f"--config={config}")
    assert before == after == joined
    assert "site-data" in after
    assert global_options_first(["log", "--", "--config", "x"]) == ["log", "--", "--config", "x"]
