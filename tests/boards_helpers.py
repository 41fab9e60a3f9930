"""Helpers for the boards tests: make games, post scores, read a Redis board directly."""

from __future__ import annotations

import uuid
from datetime import date

import httpx
import redis.asyncio as aioredis

from podium.boards.members import board_id, from_zscore, parse_member
from podium.keys import Keys
from podium.periods import EPOCH
from podium.validation import Period
from tests.conftest import Account


async def create_game(http: httpx.AsyncClient, admin: Account, **fields: object) -> dict:
    body = {"id": f"g{uuid.uuid4().hex[:8]}", "name": "A game", **fields}
    r = await http.post("/games", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def post_score(
    http: httpx.AsyncClient,
    who: Account | dict[str, str],
    game: str,
    score: int | None = None,
    *,
    action: str | None = None,
    event_id: str | None = None,
    **extra: object,
) -> httpx.Response:
    body: dict[str, object] = {"game": game, "event_id": event_id or str(uuid.uuid4())}
    if score is not None:
        body["score"] = score
    if action is not None:
        body["action"] = action
    body.update(extra)
    headers = who.headers if isinstance(who, Account) else who
    return await http.post("/scores", json=body, headers=headers)


async def read_board(
    redis: aioredis.Redis,
    prefix: str,
    game: str,
    desc: bool = True,
    period: Period = "all",
    start: date = EPOCH,
) -> list[tuple[int, int]]:
    """[(user_id, value)] in rank order, straight from the zset."""
    raw = await redis.zrange(
        Keys(prefix).zset(board_id(game, period, start)), 0, -1, withscores=True
    )
    return [(parse_member(m)[1], from_zscore(s, desc)) for m, s in raw]
