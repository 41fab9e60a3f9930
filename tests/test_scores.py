"""POST /api/v1/scores through real HTTP: operators, policies, validation, idempotency."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.boards_helpers import create_game, post_score, read_board
from tests.conftest import Account, RunningApp, register_and_login


async def test_best_desc_smoke(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = await create_game(client, admin)
    r = await post_score(client, player, game["id"], 50)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "game": game["id"],
        "user_id": player.id,
        "score": 50,
        "delta": 50,
        "rank": 1,
        "previous_rank": None,
        "duplicate": False,
    }
    r = await post_score(client, player, game["id"], 40)
    assert r.json()["score"] == 50 and r.json()["delta"] == 0
    assert server.services is not None
    assert await read_board(server.services.redis, server.settings.redis_prefix, game["id"]) == [
        (player.id, 50)
    ]
