"""Real servers for the whole session; a fresh schema and key prefix for each test.

Embedded Valkey and PostgreSQL start once on free ports in temp dirs, unless
PODIUM_TEST_REDIS_URL / PODIUM_TEST_DATABASE_URL point at external servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette

from podium.api.podium import Podium
from podium.app import close_services, create_app, open_services
from podium.embedded import EmbeddedPostgres, EmbeddedValkey, free_port
from podium.realtime.direct import PodiumWebSocketProtocol
from podium.services import Services
from podium.settings import Settings


def podium_of_app(app: Starlette) -> Podium:
    podium: Podium = app.state.podium
    return podium


TEST_PASSWORD = "correct-horse-42"


class Stores(msgspec.Struct):
    redis_url: str
    database_url: str
    valkey: EmbeddedValkey | None = None
    postgres: EmbeddedPostgres | None = None


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    redis_url = os.environ.get("PODIUM_TEST_REDIS_URL")
    database_url = os.environ.get("PODIUM_TEST_DATABASE_URL")
    base = tmp_path_factory.mktemp("stores")
    valkey = postgres = None
    try:
        if not redis_url:
            valkey = EmbeddedValkey(base / "valkey", persist=False)
            valkey.start()
            redis_url = valkey.url
        if not database_url:
            postgres = EmbeddedPostgres(base / "postgres", durable=False)
            postgres.start()
            database_url = postgres.url
        yield Stores(redis_url, database_url, valkey, postgres)
    finally:
        if postgres is not None:
            postgres.stop()
        if valkey is not None:
            valkey.stop()


def make_settings(stores: Stores, **overrides: object) -> Settings:
    tag = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "redis_url": stores.redis_url,
        "database_url": stores.database_url,
        "secret_key": "test-secret-" + "x" * 40,
        "data_dir": Path(os.environ.get("TMPDIR", "/tmp")) / f"podium-test-{tag}",
        "redis_prefix": f"t{tag}:",
        "db_schema": f"t_{tag}",
        # Cost 12 is the production default (tested); 4 keeps the suite fast.
        "bcrypt_rounds": 4,
        "login_attempts_per_minute": 1000,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class RunningApp:
    """A real uvicorn serving the app on a free loopback port, in this event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.services: Services | None = None
        self.app: Starlette | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def podium(self) -> Podium:
        """The running app's objects (set by its lifespan)."""
        assert self.app is not None
        return podium_of_app(self.app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.services = await open_services(self.settings)
        app = self.app = create_app(self.settings, self.services)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on",
            ws=PodiumWebSocketProtocol,
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        if self.services is not None:
            await close_services(self.services)


async def drop_test_state(settings: Settings, redis: bool = True) -> None:
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
    finally:
        await conn.close()
    if not redis:
        return
    client = aioredis.Redis.from_url(settings.redis_url)  # type: ignore[arg-type]
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.redis_prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[RunningApp]:
    app = RunningApp(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@contextlib.asynccontextmanager
async def app_with(stores: Stores, **overrides: object) -> AsyncIterator[RunningApp]:
    """An extra app on the shared stores with some settings changed; its state dropped after."""
    settings = make_settings(stores, **overrides)
    try:
        async with running_app(settings) as app:
            yield app
    finally:
        await drop_test_state(settings)


@pytest.fixture
def settings(stores: Stores) -> Settings:
    return make_settings(stores)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningApp]:
    async with running_app(settings) as app:
        yield app
    await drop_test_state(settings)


@pytest.fixture
async def client(server: RunningApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=10) as http:
        yield http


class Account(msgspec.Struct):
    id: int
    username: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def register_and_login(
    http: httpx.AsyncClient, username: str | None = None, password: str = TEST_PASSWORD
) -> Account:
    username = username or f"u{uuid.uuid4().hex[:12]}"
    r = await http.post(
        "/auth/register",
        json={"username": username, "email": f"{username}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    r = await http.post("/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    return Account(body["user"]["id"], username, body["access_token"], body["refresh_token"])


async def make_admin(server: RunningApp, http: httpx.AsyncClient) -> Account:
    """An admin account: registered through the API, promoted in the database, logged in."""
    account = await register_and_login(http)
    assert server.services is not None
    await server.services.pool.execute("UPDATE users SET role = 'admin' WHERE id = $1", account.id)
    r = await http.post(
        "/auth/login", json={"username": account.username, "password": TEST_PASSWORD}
    )
    body = r.json()
    return Account(account.id, account.username, body["access_token"], body["refresh_token"])


@pytest.fixture
async def player(client: httpx.AsyncClient) -> Account:
    return await register_and_login(client)


@pytest.fixture
async def admin(server: RunningApp, client: httpx.AsyncClient) -> Account:
    return await make_admin(server, client)
