"""The node's supervision tree: a part that fails is restarted alone, counted, and shown; past its allowance
the node stops, naming the part.

Faults are real where they can be (a drop folder that goes away, as a
network share does); where a part has no outside fault to inject, one of its
methods raises once.
"""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from actors import ChildStatus, PatientActors, SupervisorGaveUp
from engine.core.hl7 import parse
from engine.core.mllp import MLLPDecoder
from engine.infra.admin_socket import AdminServer
from engine.infra.config import Config, RestartLimits, SupervisionConfig
from engine.node import Node, wiring
from engine.node.lane_worker import LaneWorker
from lanes import LaneScheduler
from tests.harness.helpers import oru
from tests.harness.node_process import ROOT, VIGIL, exchange, message

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and bin/vigil")

CRITICAL = oru("OBX|1|NM|2823-3^K^LN||6.9|mmol/L|3.5-5.1|HH|||F")


def _config(**children: RestartLimits) -> Config:
    supervision = SupervisionConfig(backoff_base_s=0.01, backoff_max_s=0.05, children=children)
    return Config(supervision=supervision)


def _child(node: Node, name: str) -> ChildStatus:
    return next(c for c in node.supervision() if c.name == name)


async def _until(condition: Callable[[], bool]) -> None:
    """Poll a part's state, as an operator's `vigil status` would: no part signals its restarts."""
    with anyio.fail_after(20):
        while not condition():  # noqa: ASYNC110 -- nothing to wait on: the state is read, as status reads it
            await anyio.sleep(0.01)


async def _ack(port: int, payload: bytes) -> str:
    def send() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            return str(parse(exchange(conn, payload, MLLPDecoder())).get("MSA-1"))

    return await anyio.to_thread.run_sync(send)


def _serve(node: Node, scenario: Callable[[int], Awaitable[None]], watch: Path | None = None) -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(lambda **kw: node.run(mllp=("127.0.0.1", 0), watch=watch, **kw))
            assert isinstance(port, int)
            await scenario(port)
            node.stop()

    anyio.run(main, backend="asyncio")  # the MLLP listener is asyncio's


def test_a_source_that_fails_restarts_alone_while_the_node_keeps_acknowledging(tmp_path: Path) -> None:
    """The drop folder goes away: that source fails and is restarted; MLLP answers AA throughout; counts show."""
    folder = tmp_path / "drop"
    folder.mkdir()
    node = Node(_config(drop_folder=RestartLimits(intensity=1000)), tmp_path / "data")

    async def scenario(port: int) -> None:
        assert {c.name: c.state for c in node.supervision()}["drop_folder"] == "running"
        shutil.rmtree(folder)  # the share is gone: each look fails
        await _until(lambda: _child(node, "drop_folder").restarts >= 2)
        assert await _ack(port, CRITICAL) == "AA"  # the rest keeps serving
        folder.mkdir()  # back: the restarted source reads it again
        (folder / "feed.hl7").write_bytes(message(1))
        await _until((folder / "done" / "feed.hl7").exists)
        assert await _ack(port, message(2)) == "AA"

    _serve(node, scenario, watch=folder)
    status = _child(node, "drop_folder")
    assert status.last_error is not None
    assert status.last_error.startswith("FileNotFoundError at ")
    others = [c for c in node.supervision() if c.name != "drop_folder"]
    assert all(c.restarts == 0 for c in others), others


def test_the_patient_records_restart_and_are_rebuilt_from_the_log(tmp_path: Path, monkeypatch: Any) -> None:
    """The patient registry fails once: it is restarted empty, and a record is rebuilt whole from the log."""
    sweep = PatientActors._sweep
    failures = []

    async def failing_once(self: PatientActors) -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("injected")
        await sweep(self)

    node = Node(_config(), tmp_path / "data")

    async def scenario(port: int) -> None:
        await _until(lambda: _child(node, "patients").restarts == 1 and _child(node, "patients").state == "running")
        assert await _ack(port, CRITICAL) == "AA"
        assert await _ack(port, message(3)) == "AA"
        record = await node.patient("GENHOSP|MRN42")
        [potassium] = record.results
        assert [version.event.value for version in potassium.versions] == ["6.9", "4.1"]  # type: ignore[union-attr]

    monkeypatch.setattr(PatientActors, "_sweep", failing_once)
    _serve(node, scenario)
    assert _child(node, "patients").last_error == f"RuntimeError at {Path(__file__).name}:{_line_of('injected')}"


def test_an_unexpected_error_in_a_lane_worker_is_logged_and_answered_at_once(
    tmp_path: Path, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug in a lane worker: its messages are answered retry at once (not after the ACK timeout), the error is
    logged and counted, and the next message goes through."""
    durable = LaneWorker._durable
    calls = []

    async def failing_once(self: LaneWorker, group: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("injected")
        return await durable(self, group)

    monkeypatch.setattr(LaneWorker, "_durable", failing_once)
    node = Node(_config(), tmp_path / "data")

    async def scenario(port: int) -> None:
        with anyio.fail_after(5):  # far below mllp.ack_timeout_s (30 s): answered, not timed out
            assert await _ack(port, CRITICAL) == "AE"
        assert await _ack(port, CRITICAL) == "AA"

    _serve(node, scenario)
    critical = next(lane for lane in node.lane_statistics() if lane.lane == "critical")
    assert (critical.done, critical.failed) == (1, 1)
    logged = capsys.readouterr()
    assert "lane.worker_failed" in logged.out + logged.err
    assert "injected" not in logged.out + logged.err  # the error's text may quote a message: its type only


def test_past_its_restart_allowance_the_node_stops_and_names_the_part(tmp_path: Path) -> None:
    """A real `vigil run`: its drop folder goes away, it may not restart (intensity 0): exit 1, one line naming it."""
    folder = tmp_path / "drop"
    folder.mkdir()
    config = tmp_path / "vigil.toml"
    config.write_text("[supervision.children.drop_folder]\nintensity = 0\n")
    args = [VIGIL, "--config", str(config), "run", "--mllp", "127.0.0.1:0", "--watch", str(folder)]
    proc = subprocess.Popen(
        [*args, "--data", str(tmp_path / "data")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    assert proc.stdout is not None
    assert "listening on" in proc.stdout.readline().decode()
    shutil.rmtree(folder)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = [line for line in err.decode().splitlines() if not line.startswith("{")]  # the JSON log lines aside
    assert len(lines) == 1, lines  # one line, naming the part, its allowance and its error (type and place)
    assert "drop_folder failed more than 0 times in 60 s; last: FileNotFoundError at drop_folder.py:" in lines[0]


def test_a_node_that_gives_up_raises_one_error_not_a_group(tmp_path: Path) -> None:
    """Embedded, the node raises `SupervisorGaveUp` itself, not a task group's nesting, so a caller can catch it."""
    node = Node(_config(drop_folder=RestartLimits(intensity=0)), tmp_path / "data")
    absent = tmp_path / "absent"
    with pytest.raises(SupervisorGaveUp, match="drop_folder failed more than 0 times"):
        anyio.run(functools.partial(node.run, mllp=("127.0.0.1", 0), watch=absent), backend="asyncio")


def test_the_tree_is_in_start_order_and_every_part_runs(tmp_path: Path) -> None:
    """The log first, the sources last (they stop first); each running, none restarted."""
    node = Node(_config(), tmp_path / "data")
    seen: list[ChildStatus] = []

    async def scenario(port: int) -> None:
        assert await _ack(port, message(4)) == "AA"
        seen.extend(node.supervision())

    _serve(node, scenario)
    names = ["log", "patients", "lanes", "search", "admin", "summaries", "collector", "alerts", "mllp"]
    assert [c.name for c in seen] == names
    assert {c.state for c in seen} == {"running"}
    assert msgspec.to_builtins(seen[0]) == {"name": "log", "state": "running", "restarts": 0, "last_error": None}
    assert [c.state for c in node.supervision()] == ["stopped"] * len(names)


def _line_of(text: str) -> int:
    """The line of this file that raises with `text` (the place `describe` names)."""
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if f'raise RuntimeError("{text}")' in line)


def _started_then_failing_once(original: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A child's run that reports ready, then fails at once, the first time only; the original after."""
    calls: list[int] = []

    async def run(*args: Any, task_status: Any = anyio.TASK_STATUS_IGNORED, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            task_status.started()
            raise RuntimeError("injected")
        await original(*args, task_status=task_status, **kwargs)

    return run


@pytest.mark.parametrize(
    ("child", "owner", "name"),
    [("lanes", LaneScheduler, "run"), ("admin", AdminServer, "serve"), ("summaries", wiring, "summarise")],
)
def test_each_kind_of_part_that_fails_is_restarted_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child: str, owner: Any, name: str
) -> None:
    """The lanes, the admin endpoint, the summaries: each fails once after starting; it alone is restarted, the
    node acknowledges throughout, and the count shows on that part only (sources and patients: above)."""
    monkeypatch.setattr(owner, name, _started_then_failing_once(getattr(owner, name)))
    node = Node(_config(), tmp_path / "data")

    async def scenario(port: int) -> None:
        await _until(lambda: _child(node, child).restarts == 1 and _child(node, child).state == "running")
        assert await _ack(port, CRITICAL) == "AA"
        assert await _ack(port, message(5)) == "AA"

    _serve(node, scenario)
    restarted = {c.name: c.restarts for c in node.supervision() if c.restarts}
    assert restarted == {child: 1}
    assert (_child(node, child).last_error or "").startswith("RuntimeError at test_node_supervision.py:")
