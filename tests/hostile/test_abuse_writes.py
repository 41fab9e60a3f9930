"""Hostile writes: a bad item fails alone, out-of-shape values are 422 before any cache or
store sees them, unknown game ids pin no memory, store faults are 503 and never 500."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx

from podium.boards.scores import payload_hash
from podium.boards.writer import Write, Writer
from podium.errors import ApiError
from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp, register_and_login


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
    writer: Writer = server.services.extras["writer"]  # type: ignore[assignment]
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
