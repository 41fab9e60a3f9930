"""Device sign-in (POST /auth/device) and linking a password later (POST /auth/link)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from podium.api.auth_device import device_subject
from tests.boards_helpers import create_game, post_score
from tests.conftest import RunningApp, Stores, app_with, make_admin, register_and_login


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def device() -> str:
    return str(uuid.uuid4())


async def test_device_signin_link_then_login_keeps_the_scores(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    admin = await make_admin(server, client)
    game = (await create_game(client, admin))["id"]
    device_id = device()
    r = await client.post("/auth/device", json={"device_id": device_id})
    assert r.status_code == 200, r.text
    pair = r.json()
    user = pair["user"]
    assert user["username"].startswith("player-") and user["email"] == ""
    assert (await post_score(client, bearer(pair["access_token"]), game, 55)).status_code in (
        200,
        201,
    )
    # The same device is the same player; its refresh token works like login's.
    again = (await client.post("/auth/device", json={"device_id": device_id})).json()
    assert again["user"]["id"] == user["id"]
    r = await client.post("/auth/refresh", json={"refresh_token": again["refresh_token"]})
    assert r.status_code == 200, r.text
    # No password yet: nobody logs in as it.
    r = await client.post("/auth/login", json={"username": user["username"], "password": "x" * 8})
    assert r.status_code == 401
    name = f"d{uuid.uuid4().hex[:10]}"
    link = {"username": name, "password": "correct-horse-42"}
    r = await client.post("/auth/link", json=link, headers=bearer(pair["access_token"]))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == user["id"] and r.json()["username"] == name
    r = await client.post("/auth/link", json=link, headers=bearer(pair["access_token"]))
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_linked", r.text
    r = await client.post("/auth/login", json={"username": name, "password": "correct-horse-42"})
    assert r.status_code == 200, r.text
    login = r.json()
    assert login["user"]["id"] == user["id"]
    r = await client.get(
        f"/leaderboards/{game}/users/{user['id']}", headers=bearer(login["access_token"])
    )
    assert r.status_code == 200 and r.json()["score"] == 55, r.text


async def test_link_refuses_taken_names_and_password_accounts(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    other = await register_and_login(client)
    pair = (await client.post("/auth/device", json={"device_id": device()})).json()
    headers = bearer(pair["access_token"])
    r = await client.post(
        "/auth/link",
        json={"username": other.username.upper(), "password": "correct-horse-42"},
        headers=headers,
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "username_taken", r.text
    r = await client.post(
        "/auth/link",
        json={
            "username": f"d{uuid.uuid4().hex[:10]}",
            "password": "correct-horse-42",
            "email": f"{other.username}@example.com",
        },
        headers=headers,
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "email_taken", r.text
    # An account with a password is not a device player.
    r = await client.post(
        "/auth/link",
        json={"username": f"d{uuid.uuid4().hex[:10]}", "password": "correct-horse-42"},
        headers=other.headers,
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_linked", r.text
    r = await client.post("/auth/link", json={"username": "zz", "password": "correct-horse-42"})
    assert r.status_code in (401, 422)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"device_id": "short"},
        {"device_id": "x" * 129},
        {"device_id": "has spaces in it, sixteen+"},
        {"device_id": "a" * 20 + "\n"},
        {"device_id": 12345678901234567890},
        {"device_id": device(), "extra": 1},
    ],
)
async def test_device_ids_are_validated(client: httpx.AsyncClient, body: dict) -> None:
    r = await client.post("/auth/device", json=body)
    assert r.status_code in (400, 422), r.text


async def test_concurrent_first_device_signins_make_one_user(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    device_id = device()
    replies = await asyncio.gather(
        *(client.post("/auth/device", json={"device_id": device_id}) for _ in range(6))
    )
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    assert len({r.json()["user"]["id"] for r in replies}) == 1
    assert server.services is not None
    # The device id is a credential: only its hash is kept.
    stored = await server.services.pool.fetch("SELECT subject FROM identities")
    assert [row["subject"] for row in stored] == [device_subject(device_id)]


async def test_device_signin_is_throttled_per_device_and_per_address(stores: Stores) -> None:
    async with (
        app_with(stores, device_signins_per_minute=3) as app,
        httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=10) as http,
    ):
        device_id = device()
        codes = [
            (await http.post("/auth/device", json={"device_id": device_id})).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        r = await http.post("/auth/device", json={"device_id": device_id})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # Other devices from this address: five times the limit in all (three spent), then 429.
        codes = [
            (await http.post("/auth/device", json={"device_id": device()})).status_code
            for _ in range(14)
        ]
        assert codes == [200] * 12 + [429] * 2


async def test_a_voided_device_player_gets_no_tokens(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    admin = await make_admin(server, client)
    device_id = device()
    pair = (await client.post("/auth/device", json={"device_id": device_id})).json()
    r = await client.post(f"/admin/users/{pair['user']['id']}/void", headers=admin.headers)
    assert r.status_code == 200, r.text
    r = await client.post("/auth/device", json={"device_id": device_id})
    assert r.status_code == 403 and r.json()["error"]["code"] == "voided", r.text
    r = await client.get("/auth/me", headers=bearer(pair["access_token"]))
    assert r.status_code == 403
