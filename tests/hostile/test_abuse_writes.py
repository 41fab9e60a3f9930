"""Hostile writes: a bad item fails alone, out-of-shape values are 422 before any cache or
store sees them, unknown game ids pin no memory, store faults are 503 and never 500."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from podium.boards import members
from podium.boards.model import GameCache
from podium.boards.submit import payload_hash
from podium.boards.writer import Write, Writer
from podium.embedded import EmbeddedError, EmbeddedPostgres
from podium.errors import ApiError
from tests.boards_helpers import create_game, post_score
from tests.conftest import (
    Account,
    RunningApp,
    Stores,
    drop_test_state,
    make_admin,
    make_settings,
    register_and_login,
    running_app,
)
from tests.ws_helpers import open_ws, recv, send


async def test_a_nul_action_fails_alone_among_honest_writes(
    client: httpx.AsyncClient, admin: Account
) -> None:
    game = (await create_game(client, admin, policy="actions", operator="sum"))["id"]
    r = await client.put(f"/games/{game}/actions/coin", json={"points": 3}, headers=admin.headers)
    assert r.status_code in (200, 201), r.text
    players = [await register_and_login(client) for _ in range(4)]
    honest = [post_score(client, players[i % 4], game, action="coin") for i in range(20)]
    bad = [
        post_score(client, players[0], game, action="co\x00in"),
        post_score(client, players[1], game + "\x00", action="coin"),
        post_score(client, players[2], game, action="coin", event_id="not-a-uuid\x00"),
    ]
    answers = await asyncio.gather(*honest, *bad)
    assert [r.status_code for r in answers[:20]] == [200] * 20, [r.text for r in answers]
    for r, field in zip(answers[20:], ("action", "game", "event_id"), strict=True):
        assert r.status_code == 422, r.text
        assert field in r.json()["error"]["details"], r.text


async def test_empty_or_blank_values_are_refused_by_shape(
    client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    cases = [
        ({"action": "", "score": 5}, "action"),
        ({"action": " "}, "action"),
        ({"game": ""}, "game"),
        ({"game": "  "}, "game"),
        ({"signature": "", "ts": 1}, "signature"),
        ({"ts": -1}, "ts"),
        ({"ts": 2**80}, "ts"),
        ({"user_id": 0}, "user_id"),
        ({"score": 2**53}, "score"),
        ({"event_id": ""}, "event_id"),
    ]
    for fields, field in cases:
        body = {"game": game, "event_id": str(uuid.uuid4()), "score": 1, **fields}
        r = await client.post("/scores", json=body, headers=player.headers)
        assert r.status_code == 422, (fields, r.text)
        assert field in r.json()["error"]["details"], (fields, r.text)


def _write(
    user_id: int, game: str, *, score: int | None = None, action: str | None = None
) -> Write:
    kind = "action" if action is not None else "score"
    return Write(
        event_id=uuid.uuid4(),
        user_id=user_id,
        game=game,
        descending=True,
        kind=kind,
        input=score,
        action=action,
        payload_hash=payload_hash(game, user_id, kind, score, action),
        created_at=datetime.now(UTC),
        client_addr="127.0.0.1",
        credential="test",
    )


async def test_the_writer_fails_a_refused_write_alone(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    """Writes that bypass validation and that PostgreSQL (or asyncpg's encoder) refuses,
    queued in one batch with good ones: each bad one gets its own 422, the rest commit."""
    assert server.services is not None
    writer: Writer = server.podium.boards.writer
    game = (await create_game(client, admin, operator="sum"))["id"]
    good = [_write(player.id, game, score=1) for _ in range(10)]
    bad = [
        _write(player.id, game, action="co\x00in"),  # PostgreSQL: invalid byte sequence
        _write(player.id, game, score=2**70),  # asyncpg: out of int64 range
    ]
    # Queued in the same loop turn, so they share the writer's next batch.
    results = await asyncio.gather(
        *(writer.submit(w) for w in [*good[:5], *bad, *good[5:]]), return_exceptions=True
    )
    outcomes = [*results[:5], *results[7:]]
    assert [getattr(o, "status", o) for o in outcomes] == ["ok"] * 10
    for refused in results[5:7]:
        assert isinstance(refused, ApiError) and refused.status == 422, refused
    total = await server.services.pool.fetchval(
        "SELECT value FROM board_values WHERE game_id = $1 AND period = 'all' AND user_id = $2",
        game,
        player.id,
    )
    assert total == 10


def _key_bytes(holder: object) -> int:
    """Bytes of the string keys in every dict an object holds (whatever it names them)."""
    return sum(
        len(key)
        for value in vars(holder).values()
        if isinstance(value, dict)
        for key in value
        if isinstance(key, str)
    )


async def test_unknown_game_ids_pin_no_memory(stores: Stores) -> None:
    """Unknown and huge game ids over HTTP writes, WS subscribes and WS handshakes: each
    is answered 404/422, and the caches stay bounded and hold no huge id."""
    settings = make_settings(
        stores, ws_messages_per_second=100_000, writes_per_second_per_user=100_000
    )
    huge = "x" * 48_000
    try:
        async with (
            running_app(settings) as app,
            httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=30) as http,
        ):
            assert app.services is not None
            cache: GameCache = app.podium.boards.games
            cache.max_misses = 50
            admin = await make_admin(app, http)
            player = await register_and_login(http)
            game = (await create_game(http, admin))["id"]
            assert (await post_score(http, player, game, 1)).status_code == 200
            for i in range(120):
                r = await post_score(http, player, f"nope-{i}", 1)
                assert r.status_code == 404, r.text
            for i in range(20):
                r = await post_score(http, player, f"{huge}{i}", 1)
                assert r.status_code == 422, r.text
            ws = await open_ws(app, "scores", player)
            try:
                # A slug naming no game: not found. Not a slug: refused by its shape (a
                # malformed message, so only a few before the socket's strike limit).
                names = [(f"gone-{i}", "not_found") for i in range(120)]
                names += [(f"{huge}{i}", "invalid") for i in range(10)]
                for name, code in names:
                    await send(ws, {"type": "subscribe", "game": name})
                    reply = await recv(ws, timeout=10)
                    assert (reply["type"], reply["code"]) == ("error", code), reply
                await send(ws, {"type": "subscribe", "game": game})
                assert (await recv(ws, timeout=10))["type"] == "subscribed"
            finally:
                await ws.close()
            for name, status in (("y" * 6000, 422), ("missing-game", 404)):
                with pytest.raises(InvalidStatus) as info:
                    await open_ws(app, "scoreboard", player, game=name)
                assert info.value.response.status_code == status
            assert _key_bytes(cache) < 10_000
            assert cache.size <= 1 + 50, cache.size
            memo = getattr(members.board_id, "cache_info", None)
            assert memo is None or memo().currsize < 100
            assert (await post_score(http, player, game, 2)).status_code == 200
    finally:
        await drop_test_state(settings)


async def _restart(pg: EmbeddedPostgres) -> None:
    """Start a SIGKILLed postmaster again: its orphaned backends may hold the shared
    memory for a moment, so retry until a deadline."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        try:
            await asyncio.to_thread(pg.start)
            return
        except EmbeddedError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_postgres_killed_under_load_never_gives_500(stores: Stores, tmp_path: Path) -> None:
    """SIGKILL the postmaster under concurrent writes, game lookups, reports and reads:
    every answer is 200, 429 or 503 (never 500), and writes work again after a restart."""
    pg = EmbeddedPostgres(tmp_path / "pg", durable=False)
    await asyncio.to_thread(pg.start)
    settings = make_settings(
        stores,
        database_url=pg.url,
        writes_per_second_per_user=100_000,
        writes_per_second_per_ip=100_000,
    )
    statuses: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    stop = asyncio.Event()
    try:
        async with (
            running_app(settings) as app,
            httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=60) as http,
        ):
            assert app.services is not None
            cache: GameCache = app.podium.boards.games
            cache.ttl = 0  # every request looks its game up: the lookups under test
            admin = await make_admin(app, http)
            players = [await register_and_login(http) for _ in range(4)]
            games = [(await create_game(http, admin))["id"] for _ in range(3)]
            today = datetime.now(UTC).date()
            span = {"start": today.isoformat(), "end": (today + timedelta(days=1)).isoformat()}

            async def load(i: int) -> None:
                who, game = players[i % 4], games[i % 3]
                score = 0
                while not stop.is_set():
                    score += 1
                    match i % 4:
                        case 0 | 1:
                            r = await post_score(http, who, game, score)
                            statuses["write"][r.status_code] += 1
                        case 2:
                            r = await http.get(
                                "/reports/top",
                                params={**span, "game": game},
                                headers=who.headers,
                            )
                            statuses["report"][r.status_code] += 1
                        case _:
                            r = await http.get(f"/leaderboards/{game}", headers=who.headers)
                            statuses["read"][r.status_code] += 1

            tasks = [asyncio.create_task(load(i)) for i in range(12)]
            try:
                async with asyncio.timeout(60):
                    while statuses["write"][200] < 50:
                        await asyncio.sleep(0.05)
                    os.kill(pg.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
                    await asyncio.to_thread(pg.proc.wait)  # type: ignore[union-attr]
                    while statuses["write"][503] < 20:
                        await asyncio.sleep(0.05)
                await _restart(pg)
                before = statuses["write"][200]
                async with asyncio.timeout(60):
                    while statuses["write"][200] < before + 20:
                        await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            assert (await post_score(http, players[0], games[0], 10**6)).status_code == 200
    finally:
        with contextlib.suppress(Exception):  # the private server may be the one that failed
            await drop_test_state(settings)
        await asyncio.to_thread(pg.stop)
    for kind, seen in statuses.items():
        assert set(seen) <= {200, 429, 503}, (kind, dict(seen))


async def test_the_writer_sheds_writes_beyond_its_queue_bound(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    """With the store stalled (a user lock held), writes past `max_pending` are 503 at
    once instead of queueing without bound; the queued ones commit once it moves."""
    assert server.services is not None
    writer: Writer = server.podium.boards.writer
    game = (await create_game(client, admin, operator="sum"))["id"]
    limit, writer.max_pending = writer.max_pending, 3
    try:
        async with server.services.pool.acquire() as conn:
            # podium_apply_scores takes this lock per user before writing.
            key = f"podium:user:{player.id}"
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
            try:
                stuck = asyncio.ensure_future(writer.submit(_write(player.id, game, score=1)))
                waiting = (
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                async with asyncio.timeout(10):
                    # The first batch is in PostgreSQL, waiting for the lock.
                    while not await server.services.pool.fetchval(waiting):
                        await asyncio.sleep(0.01)
                queued = [
                    asyncio.ensure_future(writer.submit(_write(player.id, game, score=1)))
                    for _ in range(3)
                ]
                async with asyncio.timeout(10):
                    while len(writer._pending) < 3:
                        await asyncio.sleep(0)
                with pytest.raises(ApiError) as shed:
                    await writer.submit(_write(player.id, game, score=1))
                assert (shed.value.status, shed.value.code) == (503, "overloaded")
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
        outcomes = await asyncio.gather(stuck, *queued)
        assert [o.status for o in outcomes] == ["ok"] * 4
    finally:
        writer.max_pending = limit


async def test_writes_to_unknown_games_count_against_the_rate_limit(stores: Stores) -> None:
    settings = make_settings(stores, writes_per_second_per_user=3)
    try:
        async with (
            running_app(settings) as app,
            httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=30) as http,
        ):
            player = await register_and_login(http)
            codes = [
                (await post_score(http, player, f"nope-{i}", 1)).status_code for i in range(12)
            ]
            assert set(codes) == {404, 429}, codes
    finally:
        await drop_test_state(settings)


async def test_a_redis_that_refuses_commands_does_not_fail_writes(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    """Redis answering errors (here: out of memory) rather than dropping the connection:
    the rate limit fails open and the durable write is acknowledged, not a 500."""
    assert server.services is not None
    redis = server.services.redis
    game = (await create_game(client, admin))["id"]
    before = (await redis.config_get("maxmemory"))["maxmemory"]
    await redis.config_set("maxmemory", 1)
    try:
        r = await post_score(client, player, game, 5)
    finally:
        await redis.config_set("maxmemory", before)
    assert r.status_code == 200, r.text
    total = await server.services.pool.fetchval(
        "SELECT value FROM board_values WHERE game_id = $1 AND period = 'all'", game
    )
    assert total == 5


async def test_game_lookups_by_a_malformed_id_are_404(
    client: httpx.AsyncClient, admin: Account
) -> None:
    for raw in ("a%00b", "x" * 2000, "%C3%A9t%C3%A9", "GLOBAL%0A"):
        r = await client.get(f"/games/{raw}", headers=admin.headers)
        assert r.status_code == 404, (raw[:20], r.text)
        r = await client.patch(f"/games/{raw}", json={"name": "n"}, headers=admin.headers)
        assert r.status_code in (404, 422), (raw[:20], r.text)
        r = await client.get(
            "/reports/top",
            params={"start": "2026-01-01", "end": "2026-02-01", "game": raw},
            headers=admin.headers,
        )
        # A query parameter out of its documented shape is 422 naming it (paths: 404).
        assert r.status_code == 422, (raw[:20], r.text)


async def test_out_of_shape_socket_writes_get_their_own_invalid_error(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    async with await open_ws(server, "add-score", player) as ws:
        bad = [
            {"game": "a\x00b", "score": 1},
            {"game": game, "score": 1, "action": ""},
            {"game": game, "score": 2**53},
        ]
        for fields in bad:
            event = str(uuid.uuid4())
            await send(ws, {"type": "score", "event_id": event, **fields})
            reply = await recv(ws)
            assert (reply["type"], reply["code"], reply["event_id"]) == (
                "error",
                "invalid",
                event,
            ), (fields, reply)
        event = str(uuid.uuid4())
        await send(ws, {"type": "score", "game": game, "event_id": event, "score": 3})
        assert (await recv(ws))["type"] == "ack"
