"""The set-based batch (migration 004) and batches committing at once: per-user order,
duplicate event ids within a batch and across concurrent batches, and the migration
over a database that 003 left with data."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from podium.boards.writer import _APPLY_SQL, Outcome, Write, Writer, apply_args
from podium.store.db import migrate, migration_files
from tests.boards_helpers import create_game, read_board
from tests.conftest import Account, RunningApp, Stores


async def new_users(server: RunningApp, n: int) -> list[int]:
    assert server.services is not None
    rows = await server.services.pool.fetch(
        "INSERT INTO users (username, email, password_hash)"
        " SELECT 'b' || x, 'b' || x || '@example.com', 'x'"
        " FROM unnest($1::text[]) AS x RETURNING id",
        [uuid.uuid4().hex[:12] for _ in range(n)],
    )
    return [r["id"] for r in rows]


def write(user: int, game: str, score: int, event_id: uuid.UUID | None = None) -> Write:
    return Write(
        event_id=event_id or uuid.uuid4(),
        user_id=user,
        game=game,
        descending=True,
        kind="score",
        input=score,
        action=None,
        payload_hash=f"h{user}|{game}|{score}",
        created_at=datetime.now(UTC),
        client_addr="127.0.0.1",
        credential="user",
    )


@pytest.fixture
async def writer(server: RunningApp) -> AsyncIterator[Writer]:
    """A second writer on the app's stores with tiny batches, two committing at once."""
    assert server.services is not None
    boards = server.podium.boards
    w = Writer(
        server.services.pool,
        boards.scripts,
        boards.index,
        server.settings.retention_days,
        max_batch=3,
        window_s=0,
        in_flight=2,
    )
    w.start()
    try:
        yield w
    finally:
        await w.stop()


async def test_same_user_in_concurrent_batches_keeps_order(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, writer: Writer
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin, operator="last"))["id"]
    users = await new_users(server, 6)
    hot = users[0]
    # The hot user's writes are spread over many batches of three, between others'.
    writes = []
    for k in range(30):
        writes.append(write(hot, game, 1000 + k))
        writes.append(write(users[1 + k % 5], game, k))
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, len(writer._committing))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        outcomes = await asyncio.gather(*(writer.submit(w) for w in writes))
    finally:
        watcher.cancel()
    assert all(o.status == "ok" for o in outcomes)
    assert most == 2, "two batches should have been committing at once"
    # The log holds the hot user's writes in submission order, and `last` kept the last.
    log = await server.services.pool.fetch(
        "SELECT input, value_before, value_after FROM score_events"
        " WHERE user_id = $1 AND game_id = $2 ORDER BY seq",
        hot,
        game,
    )
    assert [r["input"] for r in log] == list(range(1000, 1030))
    assert [r["value_before"] for r in log] == [None, *range(1000, 1029)]
    hot_outcomes = [o for w, o in zip(writes, outcomes, strict=True) if w.user_id == hot]
    assert [o.value_after for o in hot_outcomes] == list(range(1000, 1030))
    seqs = [o.seq for o in hot_outcomes]
    assert seqs == sorted(seqs)
    board = dict(await read_board(server.services.redis, server.settings.redis_prefix, game))
    assert board[hot] == 1029
    value = await server.services.pool.fetchval(
        "SELECT value FROM board_values WHERE game_id = $1 AND period = 'all' AND user_id = $2",
        game,
        hot,
    )
    assert value == 1029


async def test_sum_in_concurrent_batches_equals_the_log(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, writer: Writer
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin, operator="sum"))["id"]
    users = await new_users(server, 4)
    writes = [write(users[k % 4], game, k + 1) for k in range(40)]
    outcomes = await asyncio.gather(*(writer.submit(w) for w in writes))
    assert all(o.status == "ok" for o in outcomes)
    pool = server.services.pool
    for user in users:
        mine = [(w, o) for w, o in zip(writes, outcomes, strict=True) if w.user_id == user]
        running = 0
        for w, o in mine:
            assert o.value_before == (running or None)
            running += w.input or 0
            assert o.value_after == running
        # Game and global rows equal a replay of the log.
        rows = await pool.fetch(
            "SELECT game_id, value FROM board_values"
            " WHERE user_id = $1 AND period = 'all' ORDER BY game_id",
            user,
        )
        assert {r["game_id"]: r["value"] for r in rows} == {game: running, "global": running}


async def test_duplicate_event_id_in_one_writer_batch(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    assert server.services is not None
    boards = server.podium.boards
    # One batch would hold all three; the repeats wait for the next one.
    w = Writer(
        server.services.pool,
        boards.scripts,
        boards.index,
        server.settings.retention_days,
        max_batch=16,
        window_s=0.05,
    )
    w.start()
    try:
        game = (await create_game(client, admin, operator="sum"))["id"]
        (user,) = await new_users(server, 1)
        first = write(user, game, 5)
        same = write(user, game, 5, first.event_id)
        other = write(user, game, 6, first.event_id)
        a, b, c = await asyncio.gather(w.submit(first), w.submit(same), w.submit(other))
    finally:
        await w.stop()
    assert (a.status, b.status, c.status) == ("ok", "duplicate", "conflict")
    assert b.seq == a.seq and b.value_after == 5
    count = await server.services.pool.fetchval(
        "SELECT count(*) FROM score_events WHERE event_id = $1", first.event_id
    )
    assert count == 1


async def test_duplicate_event_id_in_one_statement(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    """The function on its own: a repeated id (even for another user) sees the first."""
    assert server.services is not None
    game = (await create_game(client, admin, operator="sum"))["id"]
    u1, u2 = await new_users(server, 2)
    first = write(u1, game, 5)
    batch = [
        first,
        write(u2, game, 7),
        write(u1, game, 5, first.event_id),
        write(u2, game, 9, first.event_id),
        write(u1, game, 1),
    ]
    records = await server.services.pool.fetch(_APPLY_SQL, *apply_args(batch))
    assert [r["idx"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["status"] for r in records] == ["ok", "ok", "duplicate", "conflict", "ok"]
    assert records[2]["seq"] == records[0]["seq"]
    assert [r["value_after"] for r in records] == [5, 7, 5, 5, 6]


async def test_duplicate_event_id_across_concurrent_batches(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    """A second batch inserting an id the first has not committed yet waits for it, then
    answers a replay (the same payload) or a conflict (another payload)."""
    assert server.services is not None
    game = (await create_game(client, admin, operator="sum"))["id"]
    u1, u2, u3 = await new_users(server, 3)
    shared = uuid.uuid4()
    pool = server.services.pool
    async with pool.acquire() as c1, pool.acquire() as c2, pool.acquire() as c3:
        tx = c1.transaction()
        await tx.start()
        (held,) = await c1.fetch(_APPLY_SQL, *apply_args([write(u1, game, 4, shared)]))
        assert held["status"] == "ok"
        # Other users, so no advisory lock stands between them: only the event id.
        same = write(u2, game, 4, shared)
        same.payload_hash = f"h{u1}|{game}|4"
        replay = asyncio.create_task(c2.fetch(_APPLY_SQL, *apply_args([same])))
        other = asyncio.create_task(c3.fetch(_APPLY_SQL, *apply_args([write(u3, game, 8, shared)])))
        done, _ = await asyncio.wait([replay, other], timeout=0.5)
        assert not done, "the second batches must wait for the first's commit"
        await tx.commit()
        async with asyncio.timeout(10):
            (r2,), (r3,) = await asyncio.gather(replay, other)
    assert (r2["status"], r2["seq"], r2["value_after"]) == ("duplicate", held["seq"], 4)
    assert r3["status"] == "conflict"
    rows = await pool.fetchval(
        "SELECT count(*) FROM board_values WHERE user_id = ANY($1::bigint[])", [u2, u3]
    )
    assert rows == 0


async def migrate_until(conn: asyncpg.Connection, schema: str, last: str) -> None:
    """What `migrate` did when 003 was the newest migration."""
    async with conn.transaction():
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
        await conn.execute(
            "CREATE TABLE schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in migration_files():
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            if version == last:
                break


async def test_migration_over_a_003_database_with_data(stores: Stores) -> None:
    schema = f"m_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(stores.database_url)
    try:
        await migrate_until(conn, schema, "003_write_hardening")
        await conn.execute(f'SET search_path TO "{schema}", public')
        user = await conn.fetchval(
            "INSERT INTO users (username, email, password_hash)"
            " VALUES ('m', 'm@example.com', 'x') RETURNING id"
        )
        await conn.execute("INSERT INTO games (id, name, operator) VALUES ('g', 'g', 'sum')")
        before = [write(user, "g", 3), write(user, "g", 4)]
        old = await conn.fetch(_APPLY_SQL, *apply_args(before))
        assert [r["status"] for r in old] == ["ok", "ok"]

        assert "004_set_based_batch" in await migrate(conn, schema)
        await conn.execute(f'SET search_path TO "{schema}", public')
        # Events written before the migration are still replays after it.
        again = await conn.fetch(_APPLY_SQL, *apply_args([*before, write(user, "g", 5)]))
        assert [r["status"] for r in again] == ["duplicate", "duplicate", "ok"]
        assert [r["seq"] for r in again[:2]] == [r["seq"] for r in old]
        assert [r["value_after"] for r in again] == [3, 7, 12]
        assert again[1]["response"] == old[1]["response"]
        changed = write(user, "g", 9, before[0].event_id)
        (conflict,) = await conn.fetch(_APPLY_SQL, *apply_args([changed]))
        assert conflict["status"] == "conflict"
        value = await conn.fetchval(
            "SELECT value FROM board_values WHERE game_id = 'global' AND period = 'all'"
        )
        assert value == 12
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def test_outcome_of_a_fresh_write_needs_no_decode() -> None:
    w = write(7, "g", 5)
    record = {"status": "ok", "seq": 3, "value_before": 2, "value_after": 5, "response": None}
    out = Writer._outcome(w, record)  # type: ignore[arg-type]
    assert out == Outcome(
        status="ok",
        seq=3,
        value_before=2,
        value_after=5,
        response={
            "game": "g",
            "user_id": 7,
            "score": 5,
            "delta": 3,
            "rank": None,
            "previous_rank": None,
            "duplicate": False,
        },
    )


async def test_take_holds_busy_users_repeats_and_floods() -> None:
    """Batch forming alone (no I/O): arrival order kept per user, a committing user's
    writes wait, a repeated event id waits, one user fills at most MAX_PER_USER slots."""
    from podium.boards.writer import MAX_PER_USER, _Pending

    w = Writer(None, None, None, 30, max_batch=64)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()

    def pending(ws: list[Write]) -> list[_Pending]:
        return [_Pending(x, loop.create_future(), 0.0) for x in ws]

    flood = [write(1, "g", k) for k in range(MAX_PER_USER + 4)]
    repeat = write(2, "g", 1)
    others = [write(2, "g", 1, repeat.event_id), write(2, "g", 2), write(3, "g", 3)]
    busy = write(4, "g", 4)
    w._busy_users.add(4)
    w._pending = pending([*flood, repeat, *others, busy])
    batch = [p.write for p in w._take()]
    assert batch == [*flood[:MAX_PER_USER], repeat, others[2]]
    assert [p.write for p in w._pending] == [*flood[MAX_PER_USER:], *others[:2], busy]
    # The batch's users and ids are busy now: nothing of theirs goes until it is done.
    assert w._take() == []
    assert w._busy_users == {1, 2, 3, 4}
