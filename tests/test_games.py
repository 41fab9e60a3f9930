"""/api/v1/games: the admin contract, validation, actions table, cache invalidation."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import msgspec

from podium.boards.model import Game
from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp


async def test_create_defaults_list_get(client: httpx.AsyncClient, admin: Account) -> None:
    r = await client.post(
        "/games", json={"id": "chess-960", "name": "Chess"}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    game = r.json()
    assert {k: game[k] for k in ("id", "name", "order", "operator", "policy")} == {
        "id": "chess-960",
        "name": "Chess",
        "order": "desc",
        "operator": "best",
        "policy": "client",
    }
    assert game["min_score"] is None and game["max_score"] is None and game["signed"] is False
    r = await client.get("/games", headers=admin.headers)
    assert r.status_code == 200 and [g["id"] for g in r.json()["games"]] == ["chess-960"]
    r = await client.get("/games/chess-960", headers=admin.headers)
    assert r.status_code == 200 and r.json() == game
    assert (await client.get("/games/nope", headers=admin.headers)).status_code == 404


async def test_create_errors(client: httpx.AsyncClient, admin: Account, player: Account) -> None:
    ok = {"id": "race", "name": "Race", "order": "asc", "operator": "last"}
    assert (await client.post("/games", json=ok)).status_code == 401
    r = await client.post("/games", json=ok, headers=player.headers)
    assert r.status_code == 403
    assert (await client.post("/games", json=ok, headers=admin.headers)).status_code == 201
    r = await client.post("/games", json=ok, headers=admin.headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "game_exists"
    for bad in (
        {"id": "global", "name": "x"},
        {"id": "Upper", "name": "x"},
        {"id": "a" * 41, "name": "x"},
        {"id": "", "name": "x"},
        {"id": "ok-id", "name": ""},
        {"id": "ok-id", "name": "x", "order": "up"},
        {"id": "ok-id", "name": "x", "operator": "max"},
        {"id": "ok-id", "name": "x", "policy": "open"},
        {"id": "ok-id", "name": "x", "min_score": 10, "max_score": 1},
        {"id": "ok-id", "name": "x", "max_score": 2**53},
        {"id": "ok-id", "name": "x", "min_score": 1.5},
        {"id": "ok-id", "name": "x", "surprise": 1},
    ):
        r = await client.post("/games", json=bad, headers=admin.headers)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] == "invalid"
    r = await client.post("/games", content=b"{", headers=admin.headers)
    assert r.status_code == 400


async def test_players_read_but_do_not_change(
    client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = await create_game(client, admin, hmac_key="k" * 32)
    r = await client.get("/games", headers=player.headers)
    assert r.status_code == 200
    assert "hmac_key" not in r.json()["games"][0] and r.json()["games"][0]["signed"] is True
    assert (await client.get("/games")).status_code == 401
    gid = game["id"]
    assert (
        await client.patch(f"/games/{gid}", json={"name": "x"}, headers=player.headers)
    ).status_code == 403
    r = await client.put(f"/games/{gid}/actions/jump", json={"points": 5}, headers=player.headers)
    assert r.status_code == 403


async def test_patch_bounds_apply_at_once(
    client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    gid = (await create_game(client, admin, max_score=100))["id"]
    assert (await post_score(client, player, gid, 150)).status_code == 422
    r = await client.patch(
        f"/games/{gid}", json={"name": "Renamed", "max_score": 1000}, headers=admin.headers
    )
    assert r.status_code == 200 and r.json()["max_score"] == 1000 and r.json()["name"] == "Renamed"
    assert (await post_score(client, player, gid, 150)).status_code == 200
    r = await client.patch(f"/games/{gid}", json={"max_score": None}, headers=admin.headers)
    assert r.json()["max_score"] is None and r.json()["name"] == "Renamed"
    r = await client.patch(
        f"/games/{gid}", json={"min_score": 5, "max_score": 1}, headers=admin.headers
    )
    assert r.status_code == 422
    r = await client.patch(f"/games/{gid}", json={"order": "asc"}, headers=admin.headers)
    assert r.status_code == 422  # order and operator are fixed at creation
    assert (
        await client.patch("/games/nope", json={"name": "x"}, headers=admin.headers)
    ).status_code == 404


async def test_actions_table(client: httpx.AsyncClient, admin: Account, player: Account) -> None:
    gid = (await create_game(client, admin, policy="actions", operator="sum"))["id"]
    r = await client.put(f"/games/{gid}/actions/coin", json={"points": 5}, headers=admin.headers)
    assert r.status_code == 200 and r.json() == {"game": gid, "action": "coin", "points": 5}
    await client.put(f"/games/{gid}/actions/coin", json={"points": 7}, headers=admin.headers)
    await client.put(f"/games/{gid}/actions/boss", json={"points": 100}, headers=admin.headers)
    r = await client.get(f"/games/{gid}/actions", headers=player.headers)
    assert r.json() == {
        "game": gid,
        "actions": [{"action": "boss", "points": 100}, {"action": "coin", "points": 7}],
    }
    for path, body in (
        (f"/games/{gid}/actions/bad%20name", {"points": 1}),
        (f"/games/{gid}/actions/coin", {"points": 1.5}),
        (f"/games/{gid}/actions/coin", {"points": 2**53}),
    ):
        assert (await client.put(path, json=body, headers=admin.headers)).status_code == 422
    r = await client.put("/games/nope/actions/coin", json={"points": 1}, headers=admin.headers)
    assert r.status_code == 404


async def test_second_instance_sees_changes_within_ttl(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    """The game cache of another instance expires within its TTL."""
    import asyncio

    import msgspec

    from tests.conftest import running_app

    gid = (await create_game(client, admin))["id"]
    other_settings = msgspec.structs.replace(server.settings)
    async with (
        running_app(other_settings) as other,
        httpx.AsyncClient(base_url=other.url + "/api/v1") as http2,
    ):
        assert (await post_score(http2, player, gid, 50)).status_code == 200  # now cached there
        r = await client.patch(f"/games/{gid}", json={"hmac_key": "s" * 32}, headers=admin.headers)
        assert r.json()["signed"] is True
        # The other instance requires signatures once its cache entry expires (~1 s).
        async with asyncio.timeout(3):
            while (await post_score(http2, player, gid, 60)).status_code != 403:
                await asyncio.sleep(0.05)


def test_a_public_game_has_every_rule_and_never_the_key() -> None:
    game = Game(
        id="g", name="G", order="asc", operator="best", policy="client", min_score=0,
        max_score=9, max_delta=None, delta_window_s=60, hmac_key="k" * 32,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    shown = msgspec.to_builtins(game.public())
    kept = msgspec.to_builtins(game)
    assert shown.pop("signed") is True and "hmac_key" not in shown
    assert shown == {k: v for k, v in kept.items() if k != "hmac_key"}
