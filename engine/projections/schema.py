"""The read side's schema: numbered migrations, applied once each, in order, under a lock.

`migrate` is idempotent and safe to run from several nodes at once (a
transaction-scoped advisory lock serialises them). A migration is never
edited once released: a change is a new, higher-numbered migration. Every
table lives in the configured schema (the connection's search_path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from engine.projections.definitions import PROJECTIONS

if TYPE_CHECKING:
    from engine.projections.database import Connection

__all__ = ["MIGRATIONS", "migrate", "schema_version"]

_V1: Final = """
CREATE TABLE projection_positions (
    name text PRIMARY KEY,
    lsn bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    rebuilt_at timestamptz
);
CREATE TABLE projection_issues (
    projection text NOT NULL,
    lsn bigint NOT NULL,
    seq int NOT NULL,
    field text NOT NULL,
    raw text NOT NULL,
    reason text NOT NULL,
    noted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, lsn, seq, field, raw)
);
CREATE TABLE patients (
    patient text PRIMARY KEY,
    family text NOT NULL DEFAULT '',
    given text[] NOT NULL DEFAULT '{}',
    birth_date text,
    sex text NOT NULL DEFAULT '',
    address text NOT NULL DEFAULT '',
    deceased boolean,
    lsn bigint NOT NULL
);
CREATE TABLE encounters (
    patient text NOT NULL,
    encounter_id text NOT NULL,
    status text NOT NULL DEFAULT 'admitted',
    patient_class text NOT NULL DEFAULT '',
    location text NOT NULL DEFAULT '',
    admitted_at text,
    discharged_at text,
    lsn bigint NOT NULL,
    PRIMARY KEY (patient, encounter_id)
);
CREATE TABLE allergies (
    patient text NOT NULL,
    allergen_key text NOT NULL,
    code text NOT NULL DEFAULT '',
    code_text text NOT NULL DEFAULT '',
    code_system text NOT NULL DEFAULT '',
    category text NOT NULL DEFAULT '',
    severity text NOT NULL DEFAULT '',
    reactions text[] NOT NULL DEFAULT '{}',
    lsn bigint NOT NULL,
    PRIMARY KEY (patient, allergen_key)
);
CREATE TABLE medications (
    patient text NOT NULL,
    order_id text NOT NULL,
    status text NOT NULL,
    medication_code text NOT NULL DEFAULT '',
    medication_text text NOT NULL DEFAULT '',
    medication_system text NOT NULL DEFAULT '',
    lsn bigint NOT NULL,
    PRIMARY KEY (patient, order_id)
);
CREATE TABLE patient_links (
    merged text PRIMARY KEY,
    surviving text NOT NULL,
    lsn bigint NOT NULL
);
CREATE TABLE results (
    patient text NOT NULL,
    result_key text NOT NULL,
    code text NOT NULL DEFAULT '',
    code_text text NOT NULL DEFAULT '',
    code_system text NOT NULL DEFAULT '',
    value text NOT NULL DEFAULT '',
    value_numeric numeric,
    value_type text NOT NULL DEFAULT '',
    units text NOT NULL DEFAULT '',
    reference_range text NOT NULL DEFAULT '',
    abnormal_flags text[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT '',
    order_id text NOT NULL DEFAULT '',
    effective_at text NOT NULL,
    effective_ts timestamptz,
    versions int NOT NULL,
    recorded_at text NOT NULL,
    lsn bigint NOT NULL,
    PRIMARY KEY (patient, result_key)
);
CREATE TABLE result_versions (
    patient text NOT NULL,
    result_key text NOT NULL,
    lsn bigint NOT NULL,
    seq int NOT NULL,
    value text NOT NULL,
    abnormal_flags text[] NOT NULL,
    status text NOT NULL,
    corrects text,
    effective_at text,
    recorded_at text NOT NULL,
    PRIMARY KEY (patient, result_key, lsn, seq)
);
CREATE TABLE critical_worklist (
    patient text NOT NULL,
    result_key text NOT NULL,
    opened_lsn bigint NOT NULL,
    opened_at text NOT NULL,
    last_lsn bigint NOT NULL,
    code text NOT NULL DEFAULT '',
    code_text text NOT NULL DEFAULT '',
    value text NOT NULL DEFAULT '',
    units text NOT NULL DEFAULT '',
    abnormal_flags text[] NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT '',
    effective_at text,
    ack_lsn bigint NOT NULL DEFAULT 0,
    acknowledged_by text,
    acknowledged_at text,
    ack_note text,
    PRIMARY KEY (patient, result_key)
);
CREATE INDEX critical_worklist_open ON critical_worklist (opened_lsn) WHERE ack_lsn = 0;
CREATE TABLE medication_administrations (
    patient text NOT NULL,
    order_id text NOT NULL,
    lsn bigint NOT NULL,
    seq int NOT NULL,
    medication_code text NOT NULL,
    medication_text text NOT NULL,
    dose text NOT NULL,
    dose_numeric numeric,
    units text NOT NULL,
    status text NOT NULL,
    administered_at text,
    PRIMARY KEY (patient, order_id, lsn, seq)
);
CREATE TABLE charges (
    patient text NOT NULL,
    transaction_id text NOT NULL,
    lsn bigint NOT NULL,
    seq int NOT NULL,
    code text NOT NULL,
    code_text text NOT NULL,
    transaction_type text NOT NULL,
    quantity text NOT NULL,
    amount numeric(14, 2),
    amount_raw text NOT NULL,
    posted_at text,
    PRIMARY KEY (patient, transaction_id, lsn, seq)
);
"""

# A critical result acknowledged, then critical again (a corrected value that is still critical, a
# new critical value): the item opens again, for the new value. Open: acknowledged before its
# latest critical version (an acknowledgement older than that version does not cover it).
_V2: Final = """
ALTER TABLE critical_worklist ADD COLUMN last_critical_lsn bigint NOT NULL DEFAULT 0;
UPDATE critical_worklist SET last_critical_lsn = opened_lsn;
DROP INDEX critical_worklist_open;
CREATE INDEX critical_worklist_open ON critical_worklist (opened_lsn) WHERE ack_lsn < last_critical_lsn;
"""

_V3: Final = """
CREATE TABLE phi_access_audit (
    patient text NOT NULL,
    lsn bigint NOT NULL,
    seq int NOT NULL,
    user_id text NOT NULL,
    role text NOT NULL,
    setting text NOT NULL,
    action text NOT NULL,
    reason text NOT NULL,
    outcome text NOT NULL,
    accessed_at text NOT NULL,
    PRIMARY KEY (patient, lsn, seq)
);
CREATE INDEX phi_access_audit_by_user ON phi_access_audit (user_id, lsn);
"""

_V4: Final = """
ALTER TABLE phi_access_audit
    ADD COLUMN device text NOT NULL DEFAULT '',
    ADD COLUMN detail text NOT NULL DEFAULT '',
    ADD COLUMN severity text NOT NULL DEFAULT '';
"""

MIGRATIONS: Final[tuple[tuple[int, str, str], ...]] = (
    (1, "read models: summary, results, worklist, administrations, charges", _V1),
    (2, "critical worklist: an item opens again at a new critical version", _V2),
    (3, "the PHI access audit: who read which record, when, why, with what outcome", _V3),
    (4, "the PHI access audit: the device, why a request was refused, and its severity", _V4),
)


async def migrate(conn: Connection) -> list[int]:
    """Apply every migration not yet applied (in its own schema); the versions applied now."""
    applied: list[int] = []
    async with conn.transaction():
        schema = await conn.fetchval("SELECT current_schema()")
        if schema is None:
            raise RuntimeError("the configured schema does not exist and could not be made")
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('vigil.migrate.' || current_schema()))")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            applied.append(version)
        await conn.executemany(
            "INSERT INTO projection_positions (name) VALUES ($1) ON CONFLICT DO NOTHING", [(n,) for n in PROJECTIONS]
        )
    return applied


async def schema_version(conn: Connection) -> int:
    """The highest migration applied (0 before any)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
