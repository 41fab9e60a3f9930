"""POST /api/v1/scores through real HTTP: operators, policies, validation, idempotency."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from podium.auth.tokens import hash_service_secret, new_service_secret
from podium.boards.submit import sign
from tests.boards_helpers import create_game, post_score, read_board
from tests.conftest import Account, RunningApp, Stores, make_admin, register_and_login, running_app

BIG = 2**53 - 1

EXPECTED = {
    # operator, order -> values after writing 10, 30, 20
    ("best", "desc"): [10, 30, 30],
    ("best", "asc"): [10, 10, 10],
    ("sum", "desc"): [10, 40, 60],
    ("sum", "asc"): [10, 40, 60],
    ("last", "desc"): [10, 30, 20],
    ("last", "asc"): [10, 30, 20],
    ("decr", "desc"): [-10, -40, -60],
    ("decr", "asc"): [-10, -40, -60],
}


@pytest.mark.parametrize(("operator", "order"), list(EXPECTED))
async def test_operator_and_order(
    server: RunningApp,
    client: httpx.AsyncClient,
    admin: Account,
    player: Account,
    operator: str,
    order: str,
) -> None:
    game = (await create_game(client, admin, operator=operator, order=order))["id"]
    values = []
    for score in (10, 30, 20):
        r = await post_score(client, player, game, score)
        assert r.status_code == 200, r.text
        values.append(r.json()["score"])
    assert values == EXPECTED[(operator, order)]
    # A second user with 25: ranks follow the order (desc: higher first; asc: lower first).
    other = await register_and_login(client)
    r = await post_score(client, other, game, 25)
    mine = values[-1]
    theirs = r.json()["score"]
    better = theirs > mine if order == "desc" else theirs < mine
    assert r.json()["rank"] == (1 if better else 2)
    board = await read_board(
        server.services.redis,  # type: ignore[union-attr]
        server.settings.redis_prefix,
        game,
        desc=order == "desc",
    )
    expected = (
        [(other.id, theirs), (player.id, mine)]
        if better
        else [
            (player.id, mine),
            (other.id, theirs),
        ]
    )
    assert board == expected
    # Only desc games count in the global board.
    glob = await read_board(server.services.redis, server.settings.redis_prefix, "global")  # type: ignore[union-attr]
    assert dict(glob).get(player.id) == (mine if order == "desc" else None)


async def test_validation(client: httpx.AsyncClient, admin: Account, player: Account) -> None:
    game = (await create_game(client, admin, operator="sum", min_score=-BIG))["id"]
    for body, code in (
        ({"game": game, "event_id": "not-a-uuid", "score": 1}, 422),
        ({"game": game, "event_id": str(uuid.uuid4()), "score": 1.5}, 422),
        ({"game": game, "event_id": str(uuid.uuid4()), "score": 2.0}, 422),
        ({"game": game, "event_id": str(uuid.uuid4()), "score": True}, 422),
        ({"game": game, "event_id": str(uuid.uuid4()), "score": "3"}, 422),
        ({"game": game, "event_id": str(uuid.uuid4()), "score": 2**53}, 422),
        ({"game": game, "event_id": str(uuid.uuid4()), "score": 10**30}, 422),
        ({"game": game, "event_id": str(uuid.uuid4())}, 422),
        ({"game": game, "event_id": str(uuid.uuid4()), "score": 1, "action": "a"}, 422),
        ({"game": game, "event_id": str(uuid.uuid4()), "score": 1, "extra": 1}, 422),
        ({"game": "nope", "event_id": str(uuid.uuid4()), "score": 1}, 404),
    ):
        r = await client.post("/scores", json=body, headers=player.headers)
        assert r.status_code == code, (body, r.text)
        assert set(r.json()["error"]) == {"code", "message", "details"}
    assert (
        await client.post("/scores", content=b"nope", headers=player.headers)
    ).status_code == 400
    assert (await post_score(client, {}, game, 1)).status_code == 401
    # 2^53 - 1 is exact; one more through the operator is refused and changes nothing.
    r = await post_score(client, player, game, BIG)
    assert r.status_code == 200 and r.json()["score"] == BIG
    r = await post_score(client, player, game, 1)
    assert r.status_code == 422 and r.json()["error"]["details"] == {"score": "too large"}
    r = await post_score(client, player, game, -BIG)
    assert r.json()["score"] == 0
    r = await post_score(client, player, game, -BIG)
    assert r.json()["score"] == -BIG


async def test_bounds(client: httpx.AsyncClient, admin: Account, player: Account) -> None:
    game = (await create_game(client, admin, min_score=0, max_score=100))["id"]
    assert (await post_score(client, player, game, -1)).status_code == 422
    assert (await post_score(client, player, game, 101)).status_code == 422
    assert (await post_score(client, player, game, 0)).status_code == 200
    assert (await post_score(client, player, game, 100)).status_code == 200


async def test_idempotency_and_conflict(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin, operator="sum"))["id"]
    event = str(uuid.uuid4())
    first = await post_score(client, player, game, 5, event_id=event)
    assert first.status_code == 200
    await post_score(client, player, game, 1)
    again = await post_score(client, player, game, 5, event_id=event.upper())
    assert again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    r = await post_score(client, player, game, 6, event_id=event)
    assert r.status_code == 409 and r.json()["error"]["code"] == "event_conflict"
    other = await register_and_login(client)
    assert (await post_score(client, other, game, 5, event_id=event)).status_code == 409
    assert await read_board(
        server.services.redis,
        server.settings.redis_prefix,
        game,  # type: ignore[union-attr]
    ) == [(player.id, 6)]


async def test_players_write_only_their_own(
    client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    other = await register_and_login(client)
    r = await post_score(client, player, game, 5, user_id=other.id)
    assert r.status_code == 403
    r = await post_score(client, player, game, 5, user_id=player.id)
    assert r.status_code == 200


async def test_actions_policy(client: httpx.AsyncClient, admin: Account, player: Account) -> None:
    game = (await create_game(client, admin, policy="actions", operator="sum"))["id"]
    await client.put(f"/games/{game}/actions/coin", json={"points": 3}, headers=admin.headers)
    r = await post_score(client, player, game, 1000)
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy"
    assert (await post_score(client, player, game, action="ghost")).status_code == 404
    assert (await post_score(client, player, game)).status_code == 422
    r = await post_score(client, player, game, action="coin")
    r = await post_score(client, player, game, action="coin")
    assert r.status_code == 200 and r.json()["score"] == 6 and r.json()["delta"] == 3
    client_game = (await create_game(client, admin))["id"]
    r = await post_score(client, player, client_game, action="coin")
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy"


async def test_authoritative_policy(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin, policy="authoritative"))["id"]
    other = (await create_game(client, admin, policy="authoritative"))["id"]
    secret = new_service_secret("srv")
    await server.services.pool.execute(
        "INSERT INTO service_credentials (name, secret_hash, games) VALUES ($1, $2, $3)",
        "srv",
        hash_service_secret(secret),
        [game],
    )
    service = {"Authorization": f"Bearer {secret}"}
    r = await post_score(client, player, game, 5)
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy"
    r = await post_score(client, service, game, 5, user_id=player.id)
    assert r.status_code == 200 and r.json()["user_id"] == player.id
    assert (await post_score(client, service, game, 5)).status_code == 422  # names no user
    assert (await post_score(client, service, game, 5, user_id=10**9)).status_code == 404
    assert (await post_score(client, service, other, 5, user_id=player.id)).status_code == 403
    row = await server.services.pool.fetchrow(
        "SELECT credential, client_addr, input, value_before, value_after FROM score_events"
        " WHERE game_id = $1",
        game,
    )
    assert dict(row) == {
        "credential": "service:srv",
        "client_addr": "127.0.0.1",
        "input": 5,
        "value_before": None,
        "value_after": 5,
    }


async def test_suspicious_jump_is_refused_and_flagged(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin, operator="sum", max_delta=100))["id"]
    assert (await post_score(client, player, game, 60)).status_code == 200
    r = await post_score(client, player, game, 50)  # 110 within the window
    assert r.status_code == 403 and r.json()["error"]["code"] == "suspicious"
    assert (await post_score(client, player, game, 40)).status_code == 200  # exactly 100
    flags = await server.services.pool.fetch(
        "SELECT user_id, delta, window_sum FROM score_flags WHERE game_id = $1", game
    )
    assert [tuple(f) for f in flags] == [(player.id, 50, 60)]
    assert await read_board(server.services.redis, server.settings.redis_prefix, game) == [
        (player.id, 100)
    ]


async def test_signed_actions(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    key = "k" * 32
    game = (await create_game(client, admin, policy="actions", operator="sum", hmac_key=key))["id"]
    await client.put(f"/games/{game}/actions/win", json={"points": 10}, headers=admin.headers)
    event, ts = str(uuid.uuid4()), int(time.time())
    good = sign(key, player.id, game, "win", event, ts)
    r = await post_score(client, player, game, action="win", event_id=event, ts=ts, signature=good)
    assert r.status_code == 200, r.text
    for ts_, sig in ((ts, "0" * 64), (ts + 1, good), (ts - 120, None)):
        event = str(uuid.uuid4())
        sig = sig or sign(key, player.id, game, "win", event, ts_)
        r = await post_score(
            client, player, game, action="win", event_id=event, ts=ts_, signature=sig
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "signature"
    r = await post_score(client, player, game, action="win")
    assert r.status_code == 403


async def test_rate_limit_per_user(stores: Stores) -> None:
    from tests.conftest import make_settings

    settings = make_settings(stores, writes_per_second_per_user=3)
    async with (
        running_app(settings) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1") as http,
    ):
        admin = await make_admin(app, http)
        player = await register_and_login(http)
        game = (await create_game(http, admin, operator="sum"))["id"]
        codes = [(await post_score(http, player, game, 1)) for _ in range(6)]
        limited = [r for r in codes if r.status_code == 429]
        assert limited, [r.status_code for r in codes]
        assert int(limited[0].headers["retry-after"]) >= 1
        assert limited[0].json()["error"]["code"] == "rate_limited"
        # Limited writes change nothing: the total counts only the accepted ones.
        accepted = sum(r.status_code == 200 for r in codes)
        assert max(r.json()["score"] for r in codes if r.status_code == 200) == accepted
    from tests.conftest import drop_test_state

    await drop_test_state(settings)


async def test_rate_limit_per_ip_counts_every_player_of_an_address(stores: Stores) -> None:
    from tests.conftest import drop_test_state, make_settings

    settings = make_settings(stores, writes_per_second_per_ip=3)
    async with (
        running_app(settings) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1") as http,
    ):
        admin = await make_admin(app, http)
        players = [await register_and_login(http) for _ in range(4)]
        game = (await create_game(http, admin, operator="sum"))["id"]
        # 12 writes from one address by four players: even spread over three one-second
        # windows at most 9 pass.
        codes = [(await post_score(http, players[i % 4], game, 1)).status_code for i in range(12)]
        assert codes.count(429) >= 3, codes
    await drop_test_state(settings)


async def test_replay_on_another_instance_returns_the_first_response(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    import asyncio

    import msgspec

    assert server.services is not None
    game = (await create_game(client, admin))["id"]
    event = str(uuid.uuid4())
    first = await post_score(client, player, game, 9, event_id=event)
    assert first.json()["rank"] == 1
    seq = await server.services.pool.fetchval(
        "SELECT seq FROM score_events WHERE event_id = $1", uuid.UUID(event)
    )
    async with asyncio.timeout(5):  # the ranks reach the log just after the ack
        while not await server.services.pool.fetchval(
            "SELECT count(*) FROM score_ranks WHERE seq = $1", seq
        ):
            await asyncio.sleep(0.01)
    async with (
        running_app(msgspec.structs.replace(server.settings)) as other,
        httpx.AsyncClient(base_url=other.url + "/api/v1") as http2,
    ):
        again = await post_score(http2, player, game, 9, event_id=event)
    assert again.json() == {**first.json(), "duplicate": True}


async def test_a_replay_applies_a_commit_whose_instance_died_before_redis(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    # An instance SIGKILLed between its commit and its Redis apply leaves the write in
    # the log only; the client's retry (same event id) is a duplicate, and nothing else
    # would ever put the write on the boards. Seen in the fault pass (instance SIGKILL
    # with two batches in flight).
    assert server.services is not None
    redis, prefix = server.services.redis, server.settings.redis_prefix
    game = (await create_game(client, admin))["id"]
    event = str(uuid.uuid4())
    assert (await post_score(client, player, game, 9, event_id=event)).status_code == 200
    assert await read_board(redis, prefix, game) == [(player.id, 9)]
    # The game's board rows as if the apply never ran (the player is their only member).
    async for key in redis.scan_iter(match=f"{prefix}*{game}*"):
        if await redis.type(key) in (b"zset", b"hash"):
            await redis.delete(key)
    assert await read_board(redis, prefix, game) == []
    again = await post_score(client, player, game, 9, event_id=event)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert await read_board(redis, prefix, game) == [(player.id, 9)]
