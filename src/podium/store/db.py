"""The PostgreSQL pool, how its failures read (store down -> 503, bad data -> 4xx), and
schema migrations.

Migrations are ordered `NNN_name.sql` files in `migrations/`, each applied once in
its own transaction and recorded in `schema_migrations`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources

import asyncpg

from podium.errors import ApiError, unavailable
from podium.validation import is_schema_name

# SQLSTATE classes of a store that cannot answer now (connection exception, operator
# intervention such as a shutdown or a cancelled statement, insufficient resources), and
# transaction conflicts a retry would clear: the client gets 503, never 500.
_UNAVAILABLE_STATES = ("08", "57", "53", "40001", "40P01", "55P03")
# Data exception and integrity violation: the item itself is bad (4xx).
_BAD_DATA_STATES = ("22", "23")

# Any two Podium processes migrating at once take turns on this lock.
_MIGRATION_LOCK = 0x706F6469756D


def is_unavailable(exc: BaseException) -> bool:
    """A failure of the store, not of the request: PostgreSQL down, restarting, unreachable,
    over a limit, or a pooled connection asyncpg can no longer drive."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        # Client-side encoding errors (DataError) are ValueErrors: bad input, not the store.
        return not isinstance(exc, ValueError)
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # asyncpg's protocol state is broken, e.g. an idle connection that received the
        # backend's FATAL "terminating connection" before its close was seen.
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (getattr(exc, "sqlstate", "") or "").startswith(_UNAVAILABLE_STATES)
    return False


@contextlib.contextmanager
def store_errors(message: str) -> Iterator[None]:
    """Turn a store failure inside the block into 503 (ApiErrors pass through)."""
    try:
        yield
    except ApiError:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise unavailable(message) from None
        raise


def is_bad_data(exc: BaseException) -> bool:
    """PostgreSQL (or asyncpg's encoder) refused the values themselves."""
    if isinstance(exc, asyncpg.PostgresError):
        return (getattr(exc, "sqlstate", "") or "").startswith(_BAD_DATA_STATES)
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


async def fetchrow_retrying(pool: asyncpg.Pool, query: str, *args: object) -> asyncpg.Record | None:
    """`pool.fetchrow` for an idempotent read, tried once more on a fresh connection when
    the pooled one turns out broken.

    When PostgreSQL dies, each idle pooled connection receives its backend's FATAL
    "terminating connection" message; asyncpg parses it as a protocol error and leaves
    the connection in an error state until it sees the socket close. A checkout in that
    window fails with InternalClientError ("cannot switch to state 12; another operation
    (2) is in progress") and the pool then discards the connection (its reset fails), so
    one retry reaches a fresh connection: an answer if the server is back, else a
    connection error (503).
    """
    try:
        return await pool.fetchrow(query, *args)
    except asyncpg.exceptions.InternalClientError:
        return await pool.fetchrow(query, *args)


def _check_schema(schema: str) -> str:
    if not is_schema_name(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


async def create_pool(
    dsn: str, *, schema: str = "public", min_size: int = 2, max_size: int = 20
) -> asyncpg.Pool:
    """Open a pool whose connections use `schema` first on their search path."""
    _check_schema(schema)
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": f"{schema},public", "application_name": "podium"},
        command_timeout=30,
    )


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) pairs in the order they apply."""
    folder = resources.files("podium.store") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text()) for p in files]


async def migrate(conn: asyncpg.Connection, schema: str = "public") -> list[str]:
    """Apply pending migrations; return the versions applied now."""
    _check_schema(schema)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
    return applied_now
