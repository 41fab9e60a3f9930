"""What every `podium` subcommand shares: the error it raises, the stores it runs on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import msgspec

from podium.embedded import embedded_stores
from podium.settings import Settings


class CliError(Exception):
    """A command failed for a reason the user can fix; printed without a traceback."""


@contextlib.contextmanager
def resolved(settings: Settings, role: str, *, start_redis: bool = True) -> Iterator[Settings]:
    """Settings with store URLs: the configured ones, or embedded servers started here.

    With `start_redis=False` no embedded Valkey is started for this command; the
    redis_url is then the configured one, or that of a running `serve`, or None.
    """
    need_redis = settings.redis_url is None and start_redis
    need_pg = settings.database_url is None
    with embedded_stores(
        settings.data_dir, need_redis=need_redis, need_postgres=need_pg, role=role
    ) as urls:
        yield msgspec.structs.replace(
            settings,
            redis_url=settings.redis_url or urls.get("redis_url"),
            database_url=settings.database_url or urls.get("database_url"),
        )


def migrate_now(settings: Settings) -> list[str]:
    """Apply the pending migrations to settings.database_url; the versions applied."""
    from podium.store.db import create_pool, migrate

    async def run() -> list[str]:
        assert settings.database_url
        pool = await create_pool(
            settings.database_url, schema=settings.db_schema, min_size=1, max_size=1
        )
        try:
            async with pool.acquire() as conn:
                return await migrate(conn, settings.db_schema)
        finally:
            await pool.close()

    return asyncio.run(run())
