"""One error body everywhere, no stack traces, and readiness when a store is down."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis

from podium.embedded import EmbeddedPostgres, free_port
from podium.settings import Settings
from tests.conftest import Account, RunningApp, Stores, make_settings, running_app


def assert_error_body(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    # Every response, errors included, carries the security headers and a request id.
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-request-id"]
    return error


async def test_unknown_route_is_404_with_the_error_body(server: RunningApp) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in ("/no/such/page", "/api/v1/no-such-thing", "/api/v2/auth/me"):
            assert_error_body(await http.get(path), 404, "not_found")


async def test_wrong_method_is_405_with_allow(server: RunningApp) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/api/v1/auth/login")
        assert_error_body(r, 405, "method_not_allowed")
        assert "POST" in r.headers["allow"]
        assert_error_body(await http.delete("/healthz"), 405, "method_not_allowed")


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    for path in ("/auth/register", "/auth/login", "/auth/refresh"):
        r = await client.post(path, content=b'{"a": ', headers={"content-type": "application/json"})
        assert_error_body(r, 400, "bad_request")


async def test_well_formed_but_wrong_shape_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/auth/login", json=["not", "an", "object"])
    error = assert_error_body(r, 422, "invalid")
    assert error["details"] == {"body": "Expected `object`, got `array`"}
    r = await client.post("/auth/refresh", json={"refresh_token": 42})
    error = assert_error_body(r, 422, "invalid")
    assert set(error["details"]) == {"refresh_token"}  # type: ignore[arg-type]


async def test_too_large_body_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    big = b'{"username": "' + b"a" * settings.max_body_bytes + b'"}'
    r = await client.post("/auth/login", content=big, headers={"content-type": "application/json"})
    assert_error_body(r, 413, "too_large")

    async def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(settings.max_body_bytes // 1024 + 2):
            yield b" " * 1024

    r = await client.post("/auth/login", content=chunks())
    assert_error_body(r, 413, "too_large")


async def test_unauthorized_is_401_with_the_error_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/auth/me")
    assert_error_body(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"


async def test_internal_error_is_500_without_detail(
    client: httpx.AsyncClient, server: RunningApp, player: Account
) -> None:
    # A real internal failure: the store loses a table the login path writes to.
    assert server.services is not None
    await server.services.pool.execute("DROP TABLE refresh_tokens")
    r = await client.post(
        "/auth/login", json={"username": player.username, "password": "correct-horse-42"}
    )
    error = assert_error_body(r, 500, "internal")
    assert error == {"code": "internal", "message": "internal server error", "details": None}
    for leak in ("Traceback", "refresh_tokens", "asyncpg", ".py"):
        assert leak not in r.text
    # The server lives on.
    assert (await client.get("/auth/me", headers=player.headers)).status_code == 200


async def test_healthz_and_readyz_when_all_is_up(server: RunningApp) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert r.json()["instance"] == r.headers["x-podium-instance"]
        r = await http.get("/readyz")
        assert r.status_code == 200
        assert r.json() == {"status": "ready", "checks": {"redis": "ok", "postgres": "ok"}}


async def test_readyz_is_503_naming_redis_when_redis_is_down(stores: Stores) -> None:
    settings = make_settings(stores, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        async with running_app(settings) as app, httpx.AsyncClient(base_url=app.url) as http:
            r = await http.get("/readyz")
            error = assert_error_body(r, 503, "not_ready")
            assert "redis" in error["message"] and "postgres" not in error["message"]  # type: ignore[operator]
            assert error["details"]["redis"] != "ok"  # type: ignore[index]
            assert error["details"]["postgres"] == "ok"  # type: ignore[index]
            assert (await http.get("/healthz")).status_code == 200
    finally:
        conn = await asyncpg.connect(stores.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        finally:
            await conn.close()


async def test_readyz_is_503_naming_postgres_when_postgres_is_down(
    stores: Stores, tmp_path: Path
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", durable=False)
    pg.start()
    settings = make_settings(stores, database_url=pg.url)
    try:
        async with running_app(settings) as app, httpx.AsyncClient(base_url=app.url) as http:
            assert (await http.get("/readyz")).status_code == 200
            pg.stop()
            r = await http.get("/readyz")
            error = assert_error_body(r, 503, "not_ready")
            assert "postgres" in error["message"] and "redis" not in error["message"]  # type: ignore[operator]
            assert error["details"]["postgres"] != "ok"  # type: ignore[index]
            assert error["details"]["redis"] == "ok"  # type: ignore[index]
            assert (await http.get("/healthz")).status_code == 200
    finally:
        pg.stop()
        redis = aioredis.Redis.from_url(stores.redis_url)
        try:
            keys = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}*")]
            if keys:
                await redis.delete(*keys)
        finally:
            await redis.aclose()
