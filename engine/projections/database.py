"""Connecting to the read side: the DSN, TLS, timeouts, and the schema every connection works in."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

import asyncpg

from engine.core.errors import ConfigError
from engine.infra.config import ProjectionsConfig

__all__ = ["CONNECTION_ERRORS", "REFUSED_DATA_ERRORS", "Connection", "connect", "dsn_of", "open_pool"]

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one lent by a pool: both take the same calls.
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

_SslMode = Literal["disable", "prefer", "require"]

# The runner reports an outage itself (its state, one warning); asyncpg's pool would
# also log a traceback at every attempt to restore its connection floor.
logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)

# What "the database is unreachable or went away" looks like: retried, never fatal.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.ConnectionFailureError,
)


# What "the database refuses this data" looks like: the data's fault, not the connection's.
REFUSED_DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


def dsn_of(config: ProjectionsConfig) -> str | None:
    """The DSN from the environment variable the config names, else from the config; None: no read side."""
    return os.environ.get(config.dsn_env) or config.dsn or None


def _ssl(config: ProjectionsConfig, base: Path) -> ssl.SSLContext | _SslMode:
    """libpq's modes: the first three as asyncpg takes them; verify-* with a context that checks the server."""
    mode = config.ssl_mode
    if mode == "disable" or mode == "prefer" or mode == "require":  # noqa: PLR1714 -- narrows the Literal
        if config.ssl_root_cert_file:
            raise ConfigError("projections.ssl_root_cert_file is only used with ssl_mode verify-ca or verify-full")
        return mode
    cafile = str(base / config.ssl_root_cert_file) if config.ssl_root_cert_file else None
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = config.ssl_mode == "verify-full"
    return context


async def _make_schema(conn: Connection, schema: str) -> None:
    # The name is checked by the config's pattern ([a-z_][a-z0-9_]*): safe to quote in.
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


def _server_settings(config: ProjectionsConfig) -> dict[str, str]:
    return {"search_path": config.schema, "application_name": "vigil"}


async def connect(dsn: str, config: ProjectionsConfig, base: Path) -> asyncpg.Connection[asyncpg.Record]:
    """One connection in the read side's schema (made if absent)."""
    conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
        dsn,
        ssl=_ssl(config, base),
        timeout=config.connect_timeout_s,
        command_timeout=config.command_timeout_s,
        server_settings=_server_settings(config),
    )
    try:
        await _make_schema(conn, config.schema)
    except BaseException:
        await conn.close()
        raise
    return conn


async def open_pool(dsn: str, config: ProjectionsConfig, base: Path) -> asyncpg.Pool[asyncpg.Record]:
    """A pool of such connections."""
    first = await connect(dsn, config, base)  # makes the schema, and fails fast with a clear error
    await first.close()
    pool: asyncpg.Pool[asyncpg.Record] = asyncpg.create_pool(
        dsn,
        min_size=config.pool_connections_min,
        max_size=max(config.pool_connections_min, config.pool_connections_max),
        ssl=_ssl(config, base),
        timeout=config.connect_timeout_s,
        command_timeout=config.command_timeout_s,
        server_settings=_server_settings(config),
    )
    try:
        await pool
    except BaseException:
        pool.terminate()
        raise
    return pool
