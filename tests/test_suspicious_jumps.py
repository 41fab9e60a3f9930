"""Suspicious jumps (max_delta over delta_window_s), in both orders: a first write
improves from the worst value a first write can make (docs/design.md)."""

from __future__ import annotations

import httpx

from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp, register_and_login


async def _codes(http: httpx.AsyncClient, who: Account, game: str, scores: list[int]) -> list:
    out = []
    for score in scores:
        r = await post_score(http, who, game, score)
        out.append(r.status_code if r.status_code == 200 else r.json()["error"]["code"])
    return out


async def test_an_asc_first_write_improves_from_max_score(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    game = (
        await create_game(
            client, admin, order="asc", max_score=600, max_delta=100, delta_window_s=3600
        )
    )["id"]
    cheat, honest = await register_and_login(client), await register_and_login(client)
    # An impossible first time (590 better than the slowest allowed) is flagged.
    assert await _codes(client, cheat, game, [10]) == ["suspicious"]
    # 50 better, then 90 more within the window: 140 > 100.
    assert await _codes(client, honest, game, [550, 460, 500, 520]) == [
        200,
        "suspicious",
        200,
        200,
    ]
    assert server.services is not None
    flags = await server.services.pool.fetch(
        "SELECT user_id, input FROM score_flags WHERE game_id = $1 ORDER BY id", game
    )
    assert [(f["user_id"], f["input"]) for f in flags] == [(cheat.id, 10), (honest.id, 460)]


async def test_an_asc_game_without_max_score_does_not_judge_a_first_write(
    client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin, order="asc", max_delta=100))["id"]
    assert await _codes(client, player, game, [1000, 1, 950]) == [200, "suspicious", 200]


async def test_desc_first_writes_improve_from_zero_or_min_score(
    client: httpx.AsyncClient, admin: Account
) -> None:
    plain = (await create_game(client, admin, max_delta=100, delta_window_s=3600))["id"]
    floor = (await create_game(client, admin, min_score=1000, max_delta=100, delta_window_s=3600))[
        "id"
    ]
    a, b = await register_and_login(client), await register_and_login(client)
    assert await _codes(client, a, plain, [150, 80, 170, 100]) == [
        "suspicious",
        200,
        "suspicious",
        200,
    ]
    # With min_score 1000 a first 1050 is a gain of 50, not 1050.
    assert await _codes(client, b, floor, [1050, 1120, 1020]) == [200, "suspicious", 200]
