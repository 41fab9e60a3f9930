"""PostgreSQL CPU per write of podium_apply_scores, before and after a migration.

Starts an embedded PostgreSQL, migrates it up to `--before` (e.g. 003_write_hardening),
times batches of `--batch` writes (distinct users, one `sum` desc game: four game rows
and four global rows per write), then applies the remaining migrations and times the
same batches again, back to back. CPU is the backend process's user+system time
(psutil), so other load on the machine does not count.

    uv run python scripts/pg_batch_cost.py --batch 64 --batches 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psutil

from podium.boards.writer import _APPLY_SQL
from podium.embedded import EmbeddedPostgres
from podium.periods import starts_for
from podium.store.db import migration_files


async def migrate_until(conn: asyncpg.Connection, stop: str | None) -> None:
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY)")
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    for version, sql in migration_files():
        if version in done:
            continue
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        if version == stop:
            return


def batch_args(users: list[int], game: str, score: int) -> tuple[list[object], ...]:
    now = datetime.now(UTC)
    s = starts_for(now)
    n = len(users)
    return (
        [uuid.uuid4() for _ in users],
        users,
        [game] * n,
        ["score"] * n,
        [score] * n,
        [None] * n,
        ["h"] * n,
        [now] * n,
        [s["day"]] * n,
        [s["week"]] * n,
        [s["month"]] * n,
        ["127.0.0.1"] * n,
        ["user"] * n,
    )


async def measure(conn: asyncpg.Connection, users: list[int], game: str, batches: int) -> float:
    """Median over 3 runs of backend CPU µs per write."""
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    proc = psutil.Process(pid)
    for _ in range(5):  # warm the plan cache
        await conn.fetch(_APPLY_SQL, *batch_args(users, game, 1))
    runs = []
    for _ in range(3):
        t0 = proc.cpu_times()
        for _ in range(batches):
            records = await conn.fetch(_APPLY_SQL, *batch_args(users, game, 3))
            assert all(r["status"] == "ok" for r in records), records[0]
        t1 = proc.cpu_times()
        cpu = (t1.user - t0.user) + (t1.system - t0.system)
        runs.append(cpu / (batches * len(users)) * 1e6)
    return statistics.median(runs)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--users", type=int, default=2048)
    ap.add_argument("--before", default="003_write_hardening")
    opt = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgcost-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", durable=False)
        pg.start()
        try:
            conn = await asyncpg.connect(pg.url)
            await migrate_until(conn, opt.before)
            users = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO users (username, email, password_hash)"
                    " SELECT 'u' || g, 'u' || g || '@x', 'x' FROM generate_series(1, $1) g"
                    " RETURNING id",
                    opt.users,
                )
            ]
            await conn.execute("INSERT INTO games (id, name, operator) VALUES ('g', 'g', 'sum')")
            chunks = [users[i : i + opt.batch] for i in range(0, len(users), opt.batch)]

            async def run() -> float:
                # Rotate over user chunks so rows exist and are updated, as in a bench.
                return statistics.median(
                    [
                        await measure(conn, c, "g", max(1, opt.batches // len(chunks)))
                        for c in chunks
                    ]
                )

            before = await run()
            await migrate_until(conn, None)
            after = await run()
            print(f"batch {opt.batch}: {before:.1f} µs/write at {opt.before}, {after:.1f} after")
            await conn.close()
        finally:
            pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
