"""Parsing in worker processes: the same envelopes and refusals as the loop; a dead worker is not an outage."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from engine.core.decode import Decoder
from engine.core.errors import InputError
from engine.core.feedgen import generate_feed
from engine.core.windows import patient_hint
from engine.infra.config import Config
from engine.ingress.parse_pool import ParsePool
from lanes import Classifier
from tests.harness.helpers import hl7

RULES = Config().lanes.rules
NO_PID = hl7("MSH|^~\\&|LAB|GENHOSP|VIGIL|GENHOSP|2026||ORU^R01|BAD1|P|2.5.1", "OBR|1|P|F|X")
NO_MSH = b"EVN|A01|20261124\rPID|1||MRN9^^^GENHOSP^MR\r"


@pytest.fixture
def anyio_backend() -> str:
    """The pool hands futures to asyncio: the node runs on anyio's asyncio backend only."""
    return "asyncio"


def _messages() -> list[tuple[bytes, bool]]:
    feed = generate_feed(300, seed=5, patients=20)
    return [(raw, False) for raw in feed[:100]] + [(NO_PID, False), (NO_MSH, False)] + [(r, False) for r in feed[100:]]


def _in_the_loop(
    messages: list[tuple[bytes, bool]],
) -> list[tuple[object, bytes | None, object]]:
    """What the loop makes of each message: (classification or None, hint, envelope or the refusal)."""
    decoder = Decoder(Classifier(RULES))
    made: list[tuple[object, bytes | None, object]] = []
    for raw, in_batch in messages:
        try:
            classified = decoder.classifier.classify_hl7(raw, in_batch=in_batch)
        except InputError:
            made.append((None, patient_hint(raw), None))
            continue
        try:
            env: object = decoder.hl7(raw, received_at="t0", source="test", in_batch=in_batch, classified=classified)
        except InputError as exc:
            env = (type(exc), exc.reason, exc.location)
        made.append((classified, patient_hint(raw), env))
    return made


@pytest.mark.anyio
async def test_a_worker_parses_as_the_loop_does() -> None:
    """Lanes, hints, envelopes and refusals (type, reason, location) are those the loop makes."""
    messages = _messages()
    pool = ParsePool(RULES, workers=1)
    try:
        future = pool.submit(messages, "t0", "test")
        assert future is not None
        answer = await pool.result(future)
    finally:
        pool.close()
    assert answer is not None
    parsed, refused = answer
    assert set(refused) == {100}  # the message with no PID-3: classified, then refused by the mapper
    from_worker = [
        (
            p.classified,
            p.hint,
            (type(refused[i]), refused[i].reason, refused[i].location) if i in refused else p.envelope,
        )
        for i, p in enumerate(parsed)
    ]
    assert from_worker == _in_the_loop(messages)


@pytest.mark.anyio
async def test_workers_run_at_a_lower_cpu_priority_than_the_node() -> None:
    """Bulk parsing must not take the CPU from the loop that answers critical traffic."""
    # Only this pool's workers: another test's children may still be alive in this process.
    others = {c.pid for c in multiprocessing.active_children()}
    pool = ParsePool(RULES, workers=1, nice=7)
    try:
        warm = pool.submit(_messages()[:5], "t0", "test")
        assert warm is not None
        assert await pool.result(warm) is not None
        workers = [c.pid for c in multiprocessing.active_children() if c.pid is not None and c.pid not in others]
        assert workers
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in workers} == {min(19, mine + 7)}
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_killed_worker_leaves_the_parsing_to_the_loop() -> None:
    """SIGKILL the worker: the chunk's answer is None (the node parses it itself), the failure is logged once."""
    pool = ParsePool(RULES, workers=1)
    try:
        pool.start()
        warm = pool.submit(_messages()[:5], "t0", "test")
        assert warm is not None
        assert await pool.result(warm) is not None
        workers = multiprocessing.active_children()
        assert workers
        for child in workers:
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
        with structlog.testing.capture_logs() as logs:
            future = pool.submit(_messages(), "t0", "test")
            assert future is None or await pool.result(future) is None
            assert pool.submit(_messages(), "t0", "test") is None  # given up: the loop parses from now on
        assert [e["event"] for e in logs] == ["parse_pool.failed"]
    finally:
        pool.close()


@pytest.mark.anyio
async def test_a_worker_that_cannot_start_is_not_an_outage() -> None:
    """Workers whose start fails (here: rules they cannot use) leave every chunk to the loop."""
    pool = ParsePool(object(), workers=1)  # type: ignore[arg-type]
    try:
        future = pool.submit(_messages(), "t0", "test")
        assert future is None or await pool.result(future) is None
    finally:
        pool.close()


def test_workers_leave_when_the_node_is_killed(tmp_path: Path) -> None:
    """SIGKILL the process that owns the pool: its workers exit on their own, no orphan stays behind."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert owner.stdout is not None
        line = b""
        while not line.startswith(b"workers:"):  # structlog, unconfigured, prints its lines here too
            line = owner.stdout.readline()
            assert line, "the pool's owner ended early"
        workers = [int(pid) for pid in line.split()[1:]]
        assert workers
        assert all(_alive(pid) for pid in workers)
    finally:
        owner.kill()
        owner.wait(timeout=30)
        if owner.stdout is not None:
            owner.stdout.close()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


# A node stand-in: starts a pool, waits for its worker to answer, prints the workers' pids, sleeps.
_OWNER = """
import asyncio, multiprocessing, time
from engine.infra.config import Config
from engine.ingress.parse_pool import ParsePool

async def main():
    pool = ParsePool(Config().lanes.rules, workers=1)
    answer = await pool.result(pool.submit([], "t0", "test"))
    assert answer is not None
    print("workers:", *(p.pid for p in multiprocessing.active_children() if "Process" in p.name), flush=True)
    time.sleep(600)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
