"""A real node with a real PostgreSQL read side: the worklist from MLLP to acknowledgement, and outages."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from engine.auth import Role
from engine.core.mllp import MLLPDecoder
from engine.wal import open_wal
from tests.harness.helpers import MSH_ORU, oru
from tests.harness.node_process import ROOT, VIGIL, exchange, node
from tests.harness.pg_server import throwaway_server
from tests.harness.read_side import actual_tables, differences, expected_tables
from tests.harness.sessions import sign_in

_POTASSIUM_HIGH = "OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F|||20261124100000"
_SODIUM_NORMAL = "OBX|2|NM|2951-2^Sodium^LN||140|mmol/L|136-145|N|||F|||20261124100000"


def _config(tmp_path: Path, dsn: str, schema: str) -> Path:
    config = tmp_path / "vigil.toml"
    config.write_text(f'[projections]\ndsn_env = "VIGIL_TEST_NO_SUCH_VARIABLE"\ndsn = "{dsn}"\nschema = "{schema}"\n')
    return config


def _vigil(config: Path, *args: str) -> Any:
    out = subprocess.run(
        [VIGIL, "--config", str(config), *args], capture_output=True, cwd=ROOT, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout) if "--json" in args else out.stdout.decode()


def _until(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def message(i: int, obx: str) -> bytes:
    return oru(obx, msh=MSH_ORU.replace("MSG0001", f"MSG{i:05d}"))


def _send(port: int, messages: list[bytes]) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        decoder = MLLPDecoder()
        return [exchange(conn, m, decoder) for m in messages]


def _status(config: Path, data: Path) -> dict[str, Any]:
    report: dict[str, Any] = _vigil(config, "status", "--data", str(data), "--json")["projections"]
    return report


def test_a_critical_result_reaches_the_worklist_and_leaves_it_when_acknowledged(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    config, data = _config(tmp_path, pg_dsn, pg_schema), tmp_path / "data"
    sign_in(data, "dr.osei", Role.CLINICIAN, Role.OPERATOR, config=config)
    with node(data, config=config) as (_, port):
        acks = _send(port, [message(1, _POTASSIUM_HIGH), message(2, _SODIUM_NORMAL)])
        assert all(b"MSA|AA" in a for a in acks)

        def worklist(*extra: str) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = _vigil(config, "worklist", "--data", str(data), "--json", *extra)
            return items

        _until(lambda: len(worklist()) == 1, "the critical result on the worklist")
        [item] = worklist()
        assert (item["value"], item["abnormal_flags"], item["acknowledged_by"]) == ("6.9", ["HH"], None)
        table = _vigil(config, "worklist", "--data", str(data))
        assert "Critical results: open" in table
        assert "6.9 mmol/L" in table
        _until(lambda: _status(config, data)["lag_records"] == 0, "the read side to catch up")
        _vigil(config, "worklist", "ack", item["patient"], item["result_key"], "--data", str(data))
        _until(lambda: not worklist(), "the acknowledged result to leave the open worklist")
        [done] = worklist("--all")
        assert done["acknowledged_by"] == "dr.osei"
        # A result that was never critical cannot be acknowledged from the worklist.
        refused = subprocess.run(
            [
                VIGIL,
                "--config",
                str(config),
                "worklist",
                "ack",
                item["patient"],
                "nope",
                "--data",
                str(data),
            ],
            capture_output=True,
            cwd=ROOT,
            check=False,
        )
        assert refused.returncode == 1
        assert b"no critical result" in refused.stderr
        assert "read side: following" in _vigil(config, "status", "--data", str(data))
        status = _status(config, data)
        assert status["state"] == "following"
        assert status["critical_visible_p99_ms"] > 0
    shown = _vigil(config, "db", "status")
    assert "critical_worklist" in shown
    assert "schema version 4" in shown
    report = _vigil(config, "db", "status", "--json")
    assert report["database"]["schema_version"] == 4
    [position] = set(report["database"]["positions"].values())  # every projection at the log's end
    assert position > 3  # two messages, the acknowledgement, and the audit trail of the session


def test_the_node_acknowledges_through_a_database_outage_and_the_read_side_catches_up_exactly_once(
    tmp_path: Path,
) -> None:
    with throwaway_server() as server:
        config, data = _config(tmp_path, server.dsn, "vigil"), tmp_path / "data"
        sign_in(data, "dr.osei", Role.CLINICIAN, Role.OPERATOR, config=config)
        with node(data, config=config) as (_, port):
            first = [message(i, _POTASSIUM_HIGH if i % 5 == 0 else _SODIUM_NORMAL) for i in range(40)]
            assert all(b"MSA|AA" in a for a in _send(port, first))
            _until(lambda: _status(config, data)["lag_records"] == 0, "the first messages projected")
            server.stop("immediate")  # as a crash of the database server
            more = [message(i, _POTASSIUM_HIGH if i % 5 == 0 else _SODIUM_NORMAL) for i in range(40, 140)]
            assert all(b"MSA|AA" in a for a in _send(port, more)), "ingestion must not depend on the read side"
            _until(lambda: _status(config, data)["state"].startswith("waiting for the database"), "the outage seen")
            during = _status(config, data)
            assert during["lag_records"] >= 100
            assert during["lag_s"] > 0
            server.start()
            _until(lambda: _status(config, data)["lag_records"] == 0, "the catch-up after the outage", 60)
            assert _status(config, data)["state"] == "following"

        async def compare() -> None:
            async with open_wal(data / "wal") as wal:
                expected = expected_tables(wal.read_from(1))
            assert not differences(expected, await actual_tables(server.dsn, "vigil"))
            conn = await asyncpg.connect(server.dsn, server_settings={"search_path": "vigil"})
            try:
                assert await conn.fetchval("SELECT count(*) FROM projection_issues") == 0
                assert await conn.fetchval("SELECT count(*) FROM result_versions") == 140
            finally:
                await conn.close()

        anyio.run(compare)


@pytest.mark.parametrize("cuts", [3])
def test_connections_cut_mid_batch_leave_no_partial_batch(
    tmp_path: Path, pg_dsn: str, pg_schema: str, cuts: int
) -> None:
    from engine.infra.config import ProjectionsConfig
    from engine.projections import ProjectionRunner
    from tests.harness.read_side import CRITICAL, fill_log

    async def scenario() -> None:
        async with open_wal(tmp_path / "wal") as wal:
            await fill_log(wal, 30_000, patients=400)
            config = ProjectionsConfig(schema=pg_schema, batch_records_max=2000, retry_delay_max_s=0.2)
            runner = ProjectionRunner(wal, config, pg_dsn, base=Path(), critical_flags=sorted(CRITICAL))
            killed = 0
            async with anyio.create_task_group() as tg:

                async def cut() -> None:
                    nonlocal killed
                    admin = await asyncpg.connect(pg_dsn)
                    try:
                        while killed < cuts:
                            await anyio.sleep(0.05)
                            # A backend inside a transaction: mid-batch, whatever it is doing this instant.
                            killed += await admin.fetchval(
                                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE application_name = 'vigil' AND datname = current_database() "
                                "AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
                            )
                    finally:
                        await admin.close()

                tg.start_soon(cut)
                await runner.catch_up()
                tg.cancel_scope.cancel()
            expected = expected_tables(wal.read_from(1))
        assert killed >= 1, "no connection was cut mid-batch"
        assert not differences(expected, await actual_tables(pg_dsn, pg_schema))

    anyio.run(scenario)


def test_rebuild_with_the_node_running_and_without_it_gives_the_incremental_tables(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    config, data = _config(tmp_path, pg_dsn, pg_schema), tmp_path / "data"
    sign_in(data, "dr.osei", Role.CLINICIAN, Role.OPERATOR, config=config)
    with node(data, config=config) as (_, port):
        messages = [message(i, _POTASSIUM_HIGH if i % 3 == 0 else _SODIUM_NORMAL) for i in range(30)]
        assert all(b"MSA|AA" in a for a in _send(port, messages))
        _until(lambda: _status(config, data)["lag_records"] == 0, "the messages projected")
        assert "results rebuilt" in _vigil(config, "db", "rebuild", "results", "--data", str(data))
        assert _status(config, data)["positions"]["results"] == 31  # the login's audit event, then 30 messages
    assert "critical_worklist rebuilt" in _vigil(config, "db", "rebuild", "critical_worklist", "--data", str(data))

    async def compare() -> None:
        async with open_wal(data / "wal") as wal:
            expected = expected_tables(wal.read_from(1))
        assert not differences(expected, await actual_tables(pg_dsn, pg_schema))
        assert expected["worklist"]

    anyio.run(compare)
    unknown = subprocess.run(
        [VIGIL, "--config", str(config), "db", "rebuild", "nope"], capture_output=True, cwd=ROOT, check=False
    )
    assert unknown.returncode == 2
    assert b"nope" in unknown.stderr


def test_a_stuck_database_never_holds_back_acknowledgements(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    """Another session holds the read side's tables locked: the node ACKs on, then the runner catches up."""
    config, data = _config(tmp_path, pg_dsn, pg_schema), tmp_path / "data"
    sign_in(data, "dr.osei", Role.CLINICIAN, Role.OPERATOR, config=config)
    with node(data, config=config) as (_, port):
        assert all(b"MSA|AA" in a for a in _send(port, [message(0, _SODIUM_NORMAL)]))
        _until(lambda: _status(config, data)["lag_records"] == 0, "the first message projected")

        async def hold_then_release() -> None:
            blocker = await asyncpg.connect(pg_dsn, server_settings={"search_path": pg_schema})
            try:
                async with blocker.transaction():
                    await blocker.execute("LOCK TABLE projection_positions IN ACCESS EXCLUSIVE MODE")
                    started = time.monotonic()
                    acks = await anyio.to_thread.run_sync(
                        _send, port, [message(i, _POTASSIUM_HIGH) for i in range(1, 51)]
                    )
                    assert all(b"MSA|AA" in a for a in acks)
                    assert time.monotonic() - started < 20
                    assert (await anyio.to_thread.run_sync(_status, config, data))["lag_records"] == 50
            finally:
                await blocker.close()

        anyio.run(hold_then_release)
        _until(lambda: _status(config, data)["lag_records"] == 0, "the catch-up once the lock is gone")


def test_read_side_commands_fail_in_one_line_without_a_database(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere.toml"
    nowhere.write_text('[projections]\ndsn_env = "VIGIL_TEST_NO_SUCH_VARIABLE"\n')
    unreachable = _config(tmp_path, "postgresql://postgres@127.0.0.1:9/none", "vigil")
    sign_in(tmp_path / ".vigil", "dr.osei", config=unreachable)  # the worklist asks for a session before the database
    for config, expected in ((nowhere, b"no read side configured"), (unreachable, b"cannot reach")):
        for args in (["db", "status"], ["worklist"], ["db", "migrate"]):
            out = subprocess.run(
                [VIGIL, "--config", str(config), *args], capture_output=True, cwd=ROOT, timeout=60, check=False
            )
            assert out.returncode == 1, (args, out.stderr)
            assert expected in out.stderr
            assert b"Traceback" not in out.stderr
            assert len(out.stderr.decode().strip().splitlines()) == 1
