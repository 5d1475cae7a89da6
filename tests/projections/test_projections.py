"""The read side against a real PostgreSQL: equal to the actors, exactly once, through outages and bad data."""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import anyio
import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.model import (
    Admitted,
    AllergyRecorded,
    ChargePosted,
    Coded,
    DemographicsUpdated,
    Discharged,
    EncounterCancelled,
    Envelope,
    Event,
    Kind,
    Lane,
    MedicationAdministered,
    MedicationOrdered,
    OrderCancelled,
    RecordAccessed,
    ResultAcknowledged,
    ResultReported,
    Transferred,
)
from engine.infra.config import ProjectionsConfig
from engine.projections import ProjectionRunner, projection_names
from engine.projections.maintenance import rebuild
from engine.wal import WriteAheadLog, open_wal
from engine.wal.record import LogRecord
from tests.harness.read_side import CRITICAL, actual_tables, differences, expected_tables, fill_log

T = TypeVar("T")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncpg is an asyncio library


def _runner(wal: WriteAheadLog, dsn: str, schema: str, **settings: object) -> ProjectionRunner:
    config = ProjectionsConfig(schema=schema, **settings)  # type: ignore[arg-type]
    return ProjectionRunner(wal, config, dsn, base=Path("."), critical_flags=sorted(CRITICAL))


@pytest.mark.anyio
async def test_a_generated_feed_projects_to_what_the_actors_report(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    async with open_wal(tmp_path / "wal") as wal:
        await fill_log(wal, 1500)
        await _runner(wal, pg_dsn, pg_schema, batch_records_max=97).catch_up()
        expected = expected_tables(wal.read_from(1))
    actual = await actual_tables(pg_dsn, pg_schema)
    assert not differences(expected, actual)
    assert all(expected[k] for k in ("results", "worklist", "charges", "encounters", "medications"))


# -- equivalence on generated histories (hypothesis) ---------------------------------------

_PATIENTS = ("MRN|1", "MRN|2", "MRN|3")
_VALUES = st.sampled_from(["4.1", "6.9", "2.5", "n/a", "1e999", "", "  7 "])
_FLAGS = st.lists(st.sampled_from(["H", "HH", "LL", "N", "AA", "ZZ"]), max_size=2).map(tuple)


def _events() -> st.SearchStrategy[Event]:
    key = st.sampled_from(["K|1", "K|2", "K|3"])
    code = st.builds(Coded, st.sampled_from(["2823-3", "2951-2"]), st.sampled_from(["Potassium", "Sodium"]))
    when = st.sampled_from([None, "2026-11-24T08:00:00+00:00", "2026-11-24", "2026-11-24T09:30:00", "garbage-time-x"])
    result = st.builds(
        ResultReported,
        result_key=key,
        code=code,
        value=_VALUES,
        value_type=st.sampled_from(["NM", "ST", ""]),
        abnormal_flags=_FLAGS,
        status=st.sampled_from(["F", "C", "Q"]),
        effective_at=when,
    ).map(lambda r: msgspec.structs.replace(r, corrects=r.result_key if r.status == "C" else None))
    drug = st.builds(Coded, st.sampled_from(["D1", "D2"]), st.just("Drug"))
    order = st.sampled_from(["O1", "O2"])
    encounter = st.sampled_from(["V1", "V2"])
    return st.one_of(
        result,
        st.builds(
            ResultAcknowledged, result_key=key, by=st.sampled_from(["dr.a", "rn.b"]), acknowledged_at=st.just("t")
        ),
        st.builds(
            DemographicsUpdated, family=st.sampled_from(["A", "B"]), given=st.lists(st.just("X"), max_size=2).map(tuple)
        ),
        st.builds(Admitted, encounter_id=encounter, location=st.sampled_from(["ED", "ICU"]), admitted_at=when),
        st.builds(Transferred, encounter_id=encounter, to_location=st.sampled_from(["MED", "SURG"])),
        st.builds(Discharged, encounter_id=encounter, discharged_at=when),
        st.builds(
            EncounterCancelled, encounter_id=encounter, cancels=st.sampled_from(["discharge", "admission", "transfer"])
        ),
        st.builds(MedicationOrdered, order_id=order, medication=drug),
        st.builds(
            MedicationAdministered, order_id=order, medication=drug, dose=st.sampled_from(["5", "x", "", "1e999"])
        ),
        st.builds(OrderCancelled, order_id=order),
        st.builds(
            AllergyRecorded,
            allergen=st.builds(Coded, st.sampled_from(["PCN", "LTX"])),
            severity=st.sampled_from(["SV", "MI"]),
        ),
        st.builds(
            ChargePosted,
            transaction_id=st.sampled_from(["T1", "T2"]),
            amount=st.sampled_from(["45.00", "1e15", "abc", ""]),
        ),
        st.builds(
            RecordAccessed,
            user=st.sampled_from(["dr.a", "op.b"]),
            role=st.sampled_from(["clinician", "operator"]),
            action=st.sampled_from(["record", "log"]),
            outcome=st.sampled_from(["allowed", "denied"]),
            at=st.just("t"),
            device=st.sampled_from(["", "ward-3"]),
            severity=st.sampled_from(["", "high"]),
        ),
    )


_HISTORY = st.lists(
    st.tuples(st.sampled_from(_PATIENTS), st.lists(_events(), min_size=1, max_size=4), st.sampled_from(list(Lane))),
    min_size=1,
    max_size=40,
)


class _Log:
    """A log held in memory, read as the runner reads the real one: the fold's property, not the disk's."""

    def __init__(self, records: list[LogRecord]) -> None:
        self.records = records
        self.visible = len(records)

    @property
    def last_lsn(self) -> int:
        return self.visible

    def read_from(self, lsn: int, decode: Callable[[bytes], T]) -> Iterator[T]:
        for record in self.records[max(lsn, 1) - 1 : self.visible]:
            yield decode(msgspec.msgpack.encode(record))


def _log_of(history: list[tuple[str, list[Event], Lane]]) -> _Log:
    records = []
    for lsn, (patient, events, lane) in enumerate(history, 1):
        env = Envelope(f"m{lsn}", Kind.HL7V2, "ORU^R01", patient, lane, "test", "t", "test", b"", tuple(events))
        records.append(
            LogRecord(lsn, f"2026-11-24T10:00:{lsn % 60:02d}.000+00:00", 0, 0, env.message_id, (patient,), b"", env)
        )
    return _Log(records)


@settings(
    max_examples=int(os.environ.get("VIGIL_PROJECTION_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(history=_HISTORY, batch=st.integers(1, 12), cut=st.floats(0, 1))
def test_projected_tables_equal_the_actors_views_incrementally_after_an_outage_and_after_a_rebuild(
    history: list[tuple[str, list[Event], Lane]], batch: int, cut: float, pg_dsn: str
) -> None:
    log = _log_of(history)
    schema = f"h_{secrets.token_hex(6)}"
    config = ProjectionsConfig(schema=schema, batch_records_max=batch)

    def runner() -> ProjectionRunner:
        return ProjectionRunner(log, config, pg_dsn, base=Path("."), critical_flags=sorted(CRITICAL))

    async def scenario() -> None:
        try:
            # Part of the log, a stop (the database gone, the node gone: the runner is dropped), then the rest.
            log.visible = int(len(log.records) * cut)
            await runner().catch_up()
            log.visible = len(log.records)
            await runner().catch_up()
            expected = expected_tables(log.records)
            assert not differences(expected, await actual_tables(pg_dsn, schema))
            for name in projection_names():
                await rebuild(pg_dsn, config, name)
            await runner().catch_up()
            assert not differences(expected, await actual_tables(pg_dsn, schema))
        finally:
            await _drop_schema(pg_dsn, schema)

    anyio.run(scenario, backend="asyncio")


async def _drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_bad_values_are_kept_raw_and_counted_and_never_stop_the_projection(pg_dsn: str, pg_schema: str) -> None:
    code = Coded("2823-3", "Potassium")
    bad = [
        ResultReported(
            "K|1", code, value="n/a", value_type="NM", abnormal_flags=("ZZ",), effective_at="31/12/2026 8am", status="Q"
        ),
        ChargePosted("T1", amount="1e15"),
        MedicationAdministered("O1", Coded("D1"), dose="two"),
    ]
    good = [ResultReported("K|2", code, value="4.1", value_type="NM", effective_at="2026-11-24T08:00:00+00:00")]
    log = _log_of([("MRN|1", bad, Lane.STANDARD), ("MRN|1", good, Lane.STANDARD)])
    config = ProjectionsConfig(schema=pg_schema)
    await ProjectionRunner(log, config, pg_dsn, base=Path("."), critical_flags=sorted(CRITICAL)).catch_up()
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": pg_schema})
    try:
        results = {r["result_key"]: r for r in await conn.fetch("SELECT * FROM results")}
        assert results["K|1"]["value"] == "n/a"
        assert results["K|1"]["value_numeric"] is None
        assert results["K|1"]["effective_ts"] is None
        assert str(results["K|2"]["value_numeric"]) == "4.1"
        assert results["K|2"]["effective_ts"] is not None
        charge = await conn.fetchrow("SELECT amount, amount_raw FROM charges")
        assert charge is not None
        assert (charge["amount"], charge["amount_raw"]) == (None, "1e15")
        issues = {(r["projection"], r["field"], r["raw"]) for r in await conn.fetch("SELECT * FROM projection_issues")}
        assert issues == {
            ("results", "value", "n/a"),
            ("results", "abnormal_flags", "ZZ"),
            ("results", "status", "Q"),
            ("results", "effective_at", "31/12/2026 8am"),
            ("charges", "amount", "1e15"),
            ("medication_administrations", "dose", "two"),
        }
        positions = {r["name"]: r["lsn"] for r in await conn.fetch("SELECT name, lsn FROM projection_positions")}
        assert set(positions.values()) == {2}
    finally:
        await conn.close()


def test_tls_settings_follow_libpq_modes(tmp_path: Path) -> None:
    from engine.core.errors import ConfigError
    from engine.projections.database import _ssl

    assert _ssl(ProjectionsConfig(ssl_mode="require"), tmp_path) == "require"
    with pytest.raises(ConfigError, match="only used with ssl_mode verify"):
        _ssl(ProjectionsConfig(ssl_mode="require", ssl_root_cert_file="ca.pem"), tmp_path)
    full = _ssl(ProjectionsConfig(ssl_mode="verify-full"), tmp_path)
    assert isinstance(full, ssl.SSLContext)
    assert full.check_hostname
    assert full.verify_mode is ssl.CERT_REQUIRED
    ca_only = _ssl(ProjectionsConfig(ssl_mode="verify-ca"), tmp_path)
    assert isinstance(ca_only, ssl.SSLContext)
    assert not ca_only.check_hostname
    assert ca_only.verify_mode is ssl.CERT_REQUIRED


def test_an_unknown_projection_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="no projection named nope"):
        ProjectionRunner(
            _Log([]), ProjectionsConfig(), "postgresql://unused", base=Path(), critical_flags=(), only=["nope"]
        )


def test_without_a_dsn_there_is_no_read_side(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.projections import dsn_of

    monkeypatch.delenv("VIGIL_PG_DSN", raising=False)
    assert dsn_of(ProjectionsConfig()) is None
    monkeypatch.setenv("VIGIL_PG_DSN", "postgresql://from-env/db")
    assert dsn_of(ProjectionsConfig(dsn="postgresql://from-config/db")) == "postgresql://from-env/db"


@pytest.mark.anyio
async def test_a_worklist_item_opens_again_at_a_new_critical_value_and_an_earlier_ack_does_not_cover_it(
    pg_dsn: str, pg_schema: str
) -> None:
    code = Coded("2823-3", "Potassium")
    normal = ResultReported("K|1", code, value="4.1", abnormal_flags=("N",), status="F")
    high = ResultReported("K|1", code, value="6.9", abnormal_flags=("HH",), status="F")
    higher = ResultReported("K|1", code, value="7.4", abnormal_flags=("HH",), status="C", corrects="K|1")

    def ack(by: str) -> ResultAcknowledged:
        return ResultAcknowledged("K|1", by, "t")

    steps = [[normal, ack("early")], [high], [ack("dr.a")], [higher]]
    log = _log_of([("MRN|1", events, Lane.CRITICAL) for events in steps])
    config = ProjectionsConfig(schema=pg_schema)
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": pg_schema})
    try:
        seen = []
        for visible in range(1, len(steps) + 1):
            log.visible = visible
            await ProjectionRunner(log, config, pg_dsn, base=Path("."), critical_flags=sorted(CRITICAL)).catch_up()
            row = await conn.fetchrow(
                "SELECT value, ack_lsn < last_critical_lsn AS open, acknowledged_by FROM critical_worklist"
            )
            seen.append(None if row is None else (row["value"], row["open"], row["acknowledged_by"]))
    finally:
        await conn.close()
    assert seen == [None, ("6.9", True, None), ("6.9", False, "dr.a"), ("7.4", True, "dr.a")]
    assert not differences(expected_tables(log.records), await actual_tables(pg_dsn, pg_schema))


@pytest.mark.anyio
async def test_migrations_apply_once_in_order_and_carry_existing_rows(pg_dsn: str, pg_schema: str) -> None:
    from engine.projections.schema import MIGRATIONS, migrate, schema_version

    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": pg_schema})
    try:
        await conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        # A read side left at version 1, with an open item on its worklist.
        await conn.execute(MIGRATIONS[0][2])
        await conn.execute(
            "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text, applied_at timestamptz)"
        )
        await conn.execute("INSERT INTO schema_migrations VALUES (1, 'v1', now())")
        await conn.execute(
            "INSERT INTO critical_worklist (patient, result_key, opened_lsn, opened_at, last_lsn) VALUES ('P', 'K', 7, 't', 7)"
        )
        assert await migrate(conn) == [2, 3, 4]
        assert await migrate(conn) == []  # idempotent
        assert await schema_version(conn) == len(MIGRATIONS)
        assert await conn.fetchval("SELECT ack_lsn < last_critical_lsn FROM critical_worklist") is True
    finally:
        await conn.close()


def test_the_read_side_speaks_tls_and_refuses_a_server_it_cannot_verify(tmp_path: Path) -> None:
    """verify-full against a real PostgreSQL serving TLS: our CA connects, another CA is refused."""
    import trustme

    from engine.projections.database import connect
    from tests.harness.pg_server import find_pg_bindir, throwaway_server

    if find_pg_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    ca, stranger = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    stranger.cert_pem.write_to_path(str(tmp_path / "stranger.pem"))
    with throwaway_server(tls=(cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes())) as server:

        async def attempt(ca_file: str) -> str:
            config = ProjectionsConfig(ssl_mode="verify-full", ssl_root_cert_file=ca_file)
            conn = await connect(server.dsn, config, tmp_path)
            try:
                return str(await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
            finally:
                await conn.close()

        assert anyio.run(attempt, "ca.pem", backend="asyncio") == "True"
        with pytest.raises(ssl.SSLCertVerificationError):
            anyio.run(attempt, "stranger.pem", backend="asyncio")


@pytest.mark.anyio
async def test_a_record_the_database_refuses_is_noted_and_passed_and_the_rest_of_its_batch_applied(
    pg_dsn: str, pg_schema: str
) -> None:
    """PostgreSQL text cannot hold NUL: that record's rows are refused; its batch goes in record by record."""
    code = Coded("2823-3", "Potassium")
    history = [
        ("MRN|1", [ResultReported("K|1", code, value="4.1")], Lane.STANDARD),
        ("MRN|1", [ResultReported("K|2", code, value="bad\x00value")], Lane.STANDARD),
        ("MRN|2", [ResultReported("K|3", code, value="5.0")], Lane.STANDARD),
    ]
    log = _log_of(history)
    config = ProjectionsConfig(schema=pg_schema)
    await ProjectionRunner(log, config, pg_dsn, base=Path("."), critical_flags=sorted(CRITICAL)).catch_up()
    conn = await asyncpg.connect(pg_dsn, server_settings={"search_path": pg_schema})
    try:
        keys = {r["result_key"] for r in await conn.fetch("SELECT result_key FROM results")}
        issues = [dict(r) for r in await conn.fetch("SELECT projection, lsn, field, reason FROM projection_issues")]
        positions = {r["lsn"] for r in await conn.fetch("SELECT lsn FROM projection_positions")}
    finally:
        await conn.close()
    assert keys == {"K|1", "K|3"}
    assert [(i["projection"], i["lsn"], i["field"]) for i in issues] == [("*", 2, "record")]
    assert "SQLSTATE" in issues[0]["reason"]
    assert positions == {3}
