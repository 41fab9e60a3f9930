"""Hostile values on the HTTP API's own routes: each is a 4xx naming the field, never a 500."""

from __future__ import annotations

import httpx

from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp, Stores, drop_test_state, make_settings, running_app

WIDE = "99999999999999999999"  # wider than int64
INT64_PLUS_ONE = str(2**63)


async def test_game_bodies_refuse_what_the_store_cannot_hold(
    client: httpx.AsyncClient, admin: Account
) -> None:
    bad = [
        ({"name": "Nul\x00name"}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"id": "abc\n"}, "id"),
        ({"id": "global"}, "id"),
        ({"min_score": 2**63}, "min_score"),
        ({"max_delta": -1}, "max_delta"),
        ({"delta_window_s": 0}, "delta_window_s"),
        ({"hmac_key": "short"}, "hmac_key"),
        ({"hmac_key": "k" * 20 + "\x00"}, "hmac_key"),
        ({"min_score": 5, "max_score": 1}, "max_score"),
    ]
    for fields, field in bad:
        body = {"id": "hostile-game", "name": "Hostile", **fields}
        r = await client.post("/games", json=body, headers=admin.headers)
        assert r.status_code == 422, (fields, r.status_code, r.text)
        assert field in r.json()["error"]["details"], (fields, r.text)
    game = await create_game(client, admin)
    for fields, field in [
        ({"name": "a\x00"}, "name"),
        ({"delta_window_s": 2**64}, "delta_window_s"),
    ]:
        r = await client.patch(f"/games/{game['id']}", json=fields, headers=admin.headers)
        assert r.status_code == 422, (fields, r.text)
        assert field in r.json()["error"]["details"]
    r = await client.put(
        f"/games/{game['id']}/actions/jump", json={"points": 2**63}, headers=admin.headers
    )
    assert r.status_code == 422 and "points" in r.json()["error"]["details"], r.text
    # The game is untouched by all of it.
    r = await client.get(f"/games/{game['id']}", headers=admin.headers)
    assert r.status_code == 200 and r.json()["name"] == game["name"]


async def test_a_user_id_that_cannot_exist_is_no_such_user_everywhere(
    client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    await post_score(client, player, game, 10)
    for raw in (WIDE, INT64_PLUS_ONE, "0", "-1", "1.0", "abc", str(2**62)):
        for method, url in [
            ("GET", f"/users/{raw}/ranks"),
            ("GET", f"/leaderboards/{game}/users/{raw}"),
            ("GET", f"/leaderboards/{game}/around/{raw}"),
            ("POST", f"/admin/users/{raw}/void"),
        ]:
            r = await client.request(method, url, headers=admin.headers)
            assert r.status_code == 404, (method, url, r.status_code, r.text)
            assert r.json()["error"]["code"] == "not_found", (method, url, r.text)
    # A friends list with such ids lists them as missing; the real one is still ranked.
    r = await client.get(
        f"/leaderboards/{game}/members",
        params={"ids": f"{player.id},{INT64_PLUS_ONE},0"},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    assert [e["user_id"] for e in r.json()["entries"]] == [player.id]
    assert set(r.json()["missing"]) == {2**63, 0}
    r = await client.get(
        f"/leaderboards/{game}/members", params={"ids": WIDE}, headers=admin.headers
    )
    assert r.status_code == 422 and "ids" in r.json()["error"]["details"], r.text


async def test_query_parameters_are_parsed_strictly(
    client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    game = (await create_game(client, admin))["id"]
    await post_score(client, player, game, 10)
    board = f"/leaderboards/{game}"
    bad = [
        (board, "at="),
        (board, "limit="),
        (board, "offset="),
        (board, "period="),
        (board, "ranking="),
        (board, "cursor="),
        (board, "limit=3.0"),
        (board, "limit=%2B3"),
        (board, "limit=0"),
        (board, "limit=201"),
        (board, "offset=-1"),
        (board, "offset=99999999999999999999"),
        (board, "limit=1&limit=2"),
        (board, "at=2024-1-1"),
        (f"{board}/around/{player.id}", "radius="),
        (f"{board}/around/{player.id}", "radius=51"),
        (f"{board}/users/{player.id}", "at="),
        (f"{board}/members", "ids="),
        (f"{board}/members", f"ids={player.id},"),
    ]
    for url, query in bad:
        field = query.partition("=")[0]
        r = await client.get(f"{url}?{query}", headers=player.headers)
        assert r.status_code == 422, (url, query, r.status_code, r.text)
        assert field in r.json()["error"]["details"], (url, query, r.text)
    r = await client.get(f"{board}?limit=1&offset=0&period=all", headers=player.headers)
    assert r.status_code == 200 and len(r.json()["entries"]) == 1


async def test_a_wild_game_id_in_a_path_is_no_such_game(
    client: httpx.AsyncClient, admin: Account, server: RunningApp
) -> None:
    for raw in ("A" * 41, "Bad%00Game", "x" * 300):
        for url in (f"/games/{raw}", f"/games/{raw}/actions", f"/leaderboards/{raw}"):
            r = await client.get(url, headers=admin.headers)
            assert r.status_code == 404, (url, r.status_code, r.text)


async def test_options_and_405_list_every_method_of_the_path(stores: Stores) -> None:
    origin = "https://app.example"
    async with running_app(make_settings(stores, cors_origins=(origin,))) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as http:
            for path, methods in [
                ("/api/v1/games", {"GET", "HEAD", "POST"}),
                ("/api/v1/games/chess", {"GET", "HEAD", "PATCH"}),
                ("/healthz", {"GET", "HEAD"}),
            ]:
                r = await http.options(path)
                assert r.status_code == 204, (path, r.status_code, r.text)
                assert _allow(r) == methods | {"OPTIONS"}, (path, r.headers)
                r = await http.delete(path)
                assert r.status_code == 405, (path, r.text)
                assert r.json()["error"]["code"] == "method_not_allowed"
                assert _allow(r) == methods | {"OPTIONS"}, (path, r.headers)
            # A CORS preflight from an allowed origin is CORSMiddleware's answer.
            r = await http.options(
                "/api/v1/games",
                headers={"Origin": origin, "Access-Control-Request-Method": "PATCH"},
            )
            assert r.status_code == 200, r.text
            assert r.headers["access-control-allow-origin"] == origin
            assert "PATCH" in r.headers["access-control-allow-methods"]
    await drop_test_state(app.settings)


def _allow(response: httpx.Response) -> set[str]:
    return {m.strip() for m in response.headers.get("allow", "").split(",") if m.strip()}


async def test_a_deeply_nested_body_is_400_not_500(
    client: httpx.AsyncClient, admin: Account
) -> None:
    depth = 5_000  # 25 KB: under the body limit
    nested = '{"a":' * depth + "1" + "}" * depth
    for path in ("/games", "/auth/login", "/scores"):
        r = await client.post(
            path, content=nested, headers={**admin.headers, "content-type": "application/json"}
        )
        assert r.status_code == 400, (path, r.status_code, r.text)
    r = await client.get("/games", headers=admin.headers)
    assert r.status_code == 200


async def test_a_forged_cursor_is_400(client: httpx.AsyncClient, admin: Account) -> None:
    import base64

    import msgspec

    game = (await create_game(client, admin))["id"]
    await post_score(client, admin, game, 5)
    board = f"{game}:all:1970-01-01"
    for offset in (-1, 2**63 - 1, 2**64 - 1):
        raw = msgspec.msgpack.encode([board, offset, "no-such-member"])
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        r = await client.get(
            f"/leaderboards/{game}", params={"cursor": cursor}, headers=admin.headers
        )
        assert r.status_code == 400, (offset, r.status_code, r.text)
        assert "cursor" in r.json()["error"]["details"]
