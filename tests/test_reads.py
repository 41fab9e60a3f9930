"""Reads through the HTTP API: pages, cursors, ranks, neighbours, friends, all boards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from podium.embedded import EmbeddedValkey
from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, make_admin, register_and_login, running_app


async def _players(http: httpx.AsyncClient, n: int) -> list[Account]:
    return [await register_and_login(http) for _ in range(n)]


async def test_top_page_cursor_and_fields(client: httpx.AsyncClient, admin: Account) -> None:
    game = (await create_game(client, admin))["id"]
    players = await _players(client, 13)
    for i, p in enumerate(players):
        await post_score(client, p, game, (i + 1) * 10)

    r = await client.get(f"/leaderboards/{game}", params={"limit": 10}, headers=admin.headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["game"] == game and page["period"] == "all" and page["total"] == 13
    assert page["period_start"] == "1970-01-01"
    scores = [e["score"] for e in page["entries"]]
    assert scores == [130, 120, 110, 100, 90, 80, 70, 60, 50, 40]
    assert [e["rank"] for e in page["entries"]] == list(range(1, 11))
    first = page["entries"][0]
    assert first["user_id"] == players[-1].id and first["username"] == players[-1].username
    achieved = datetime.fromisoformat(first["achieved_at"])
    assert abs(achieved - datetime.now(UTC)) < timedelta(minutes=5)
    assert page["next_cursor"]

    r = await client.get(
        f"/leaderboards/{game}", params={"cursor": page["next_cursor"]}, headers=admin.headers
    )
    rest = r.json()
    assert [e["score"] for e in rest["entries"]] == [30, 20, 10]
    assert [e["rank"] for e in rest["entries"]] == [11, 12, 13]
    assert rest["next_cursor"] is None

    r = await client.get(
        f"/leaderboards/{game}", params={"offset": 2, "limit": 2}, headers=admin.headers
    )
    assert [e["rank"] for e in r.json()["entries"]] == [3, 4]


async def test_ties_and_competition_ranking(client: httpx.AsyncClient, admin: Account) -> None:
    game = (await create_game(client, admin))["id"]
    a, b, c = await _players(client, 3)
    await post_score(client, a, game, 50)
    await post_score(client, b, game, 50)  # same value later: ranks below a
    await post_score(client, c, game, 40)
    r = await client.get(f"/leaderboards/{game}", headers=admin.headers)
    assert [(e["user_id"], e["rank"]) for e in r.json()["entries"]] == [
        (a.id, 1),
        (b.id, 2),
        (c.id, 3),
    ]
    r = await client.get(
        f"/leaderboards/{game}", params={"ranking": "competition"}, headers=admin.headers
    )
    assert [e["rank"] for e in r.json()["entries"]] == [1, 1, 3]
    r = await client.get(
        f"/leaderboards/{game}",
        params={"ranking": "competition", "offset": 1},
        headers=admin.headers,
    )
    assert [e["rank"] for e in r.json()["entries"]] == [1, 3]


async def test_ascending_game_ranks_low_first(client: httpx.AsyncClient, admin: Account) -> None:
    game = (await create_game(client, admin, order="asc"))["id"]
    a, b = await _players(client, 2)
    await post_score(client, a, game, 3000)
    await post_score(client, b, game, 2500)
    r = await client.get(f"/leaderboards/{game}", headers=admin.headers)
    assert [e["user_id"] for e in r.json()["entries"]] == [b.id, a.id]


async def test_user_rank_around_and_members(client: httpx.AsyncClient, admin: Account) -> None:
    game = (await create_game(client, admin))["id"]
    players = await _players(client, 8)
    for i, p in enumerate(players):
        await post_score(client, p, game, 100 - i)  # players[0] is first

    me = players[4]
    r = await client.get(f"/leaderboards/{game}/users/{me.id}", headers=admin.headers)
    assert r.json() | {"period_start": None} == {
        "game": game,
        "period": "all",
        "period_start": None,
        "user_id": me.id,
        "rank": 5,
        "score": 96,
        "total": 8,
        "percentile": 50.0,
    }
    r = await client.get(f"/leaderboards/{game}/users/me", headers=me.headers)
    assert r.json()["rank"] == 5

    r = await client.get(
        f"/leaderboards/{game}/around/{me.id}", params={"radius": 2}, headers=admin.headers
    )
    assert [e["rank"] for e in r.json()["entries"]] == [3, 4, 5, 6, 7]
    r = await client.get(
        f"/leaderboards/{game}/around/{players[0].id}", params={"radius": 2}, headers=admin.headers
    )
    assert [e["rank"] for e in r.json()["entries"]] == [1, 2, 3]

    outsider = await register_and_login(client)
    ids = f"{players[6].id},{players[1].id},{outsider.id}"
    r = await client.get(f"/leaderboards/{game}/members", params={"ids": ids}, headers=me.headers)
    body = r.json()
    assert [(e["user_id"], e["rank"], e["global_rank"]) for e in body["entries"]] == [
        (players[1].id, 1, 2),
        (players[6].id, 2, 7),
    ]
    assert body["missing"] == [outsider.id]
    r = await client.get(f"/leaderboards/{game}/around/{outsider.id}", headers=admin.headers)
    assert r.status_code == 404


async def test_all_boards_of_a_user_include_global(
    client: httpx.AsyncClient, admin: Account
) -> None:
    g1 = (await create_game(client, admin))["id"]
    g2 = (await create_game(client, admin))["id"]
    p = await register_and_login(client)
    await post_score(client, p, g1, 10)
    await post_score(client, p, g2, 5)
    r = await client.get("/users/me/ranks", headers=p.headers)
    assert r.status_code == 200, r.text
    boards = {(b["game"], b["period"]): b for b in r.json()["boards"]}
    assert boards[("global", "all")]["score"] == 15
    assert boards[(g1, "all")]["rank"] == 1 and boards[(g2, "all")]["score"] == 5
    assert {"day", "week", "month"} <= {period for game, period in boards if game == g1}
    r2 = await client.get(f"/users/{p.id}/ranks", headers=admin.headers)
    assert r2.json() == r.json()


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 201}, 422),
        ({"limit": 0}, 422),
        ({"limit": "ten"}, 422),
        ({"offset": -1}, 422),
        ({"period": "year"}, 422),
        ({"ranking": "dense"}, 422),
        ({"at": "yesterday"}, 422),
        ({"cursor": "!!notacursor"}, 400),
    ],
)
async def test_bad_read_parameters(
    client: httpx.AsyncClient, admin: Account, params: dict[str, object], status: int
) -> None:
    game = (await create_game(client, admin))["id"]
    r = await client.get(f"/leaderboards/{game}", params=params, headers=admin.headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] in ("invalid", "bad_request")


async def test_reads_need_auth_and_known_game(client: httpx.AsyncClient, admin: Account) -> None:
    assert (await client.get("/leaderboards/global")).status_code == 401
    r = await client.get("/leaderboards/no-such-game", headers=admin.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await client.get("/leaderboards/global", headers=admin.headers)
    assert r.status_code == 200 and r.json()["total"] == 0


async def test_reads_fall_back_to_postgres_when_redis_is_down(stores, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import drop_test_state, make_settings

    valkey = EmbeddedValkey(tmp_path / "valkey", persist=False)
    valkey.start()
    settings = make_settings(stores, redis_url=valkey.url)
    try:
        async with running_app(settings) as app:
            async with httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=10) as http:
                admin = await make_admin(app, http)
                game = (await create_game(http, admin))["id"]
                players = await _players(http, 4)
                for i, p in enumerate(players):
                    await post_score(http, p, game, 10 * (i + 1))
                before = (await http.get(f"/leaderboards/{game}", headers=admin.headers)).json()
                rank_before = (
                    await http.get(
                        f"/leaderboards/{game}/users/{players[1].id}", headers=admin.headers
                    )
                ).json()
                valkey.stop()
                r = await http.get(f"/leaderboards/{game}", headers=admin.headers)
                assert r.status_code == 200, r.text
                assert r.json()["entries"] == before["entries"]
                r = await http.get(
                    f"/leaderboards/{game}/users/{players[1].id}", headers=admin.headers
                )
                assert r.status_code == 200, r.text
                assert r.json() == rank_before
    finally:
        valkey.stop()
        await drop_test_state(settings, redis=False)
