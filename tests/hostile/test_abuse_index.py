"""The Redis index under races and hostile values: voids, rebuilds, store failures.

Races are made deterministic with real sockets: a TCP proxy in front of Valkey holds one
instance's apply in flight while the other instance acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import msgspec

from podium.boards.index import BoardIndex
from podium.boards.scripts import source
from podium.settings import Settings
from tests.boards_helpers import create_game, post_score, read_board
from tests.conftest import Account, RunningApp, running_app
from tests.test_rebuild import assert_index_matches_log


class HoldingProxy:
    """A TCP proxy to Valkey. Armed, it holds the first connection that sends `marker`
    (from that command on) until `release` is set; everything else flows."""

    def __init__(self, target_url: str, marker: bytes) -> None:
        parts = urlsplit(target_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.marker = marker
        self.armed = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> HoldingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        up = asyncio.create_task(self._pipe(reader, up_writer, hold=True))
        down = asyncio.create_task(self._pipe(up_reader, writer, hold=False))
        self._tasks |= {up, down}
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()
        self._tasks -= {up, down}

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if hold and self.armed and self.marker in data:
                    self.armed = False
                    self.held.set()
                    await self.release.wait()
                writer.write(data)
                await writer.drain()


APPLY_SHA = hashlib.sha1(source("apply").encode()).hexdigest().encode()


@contextlib.asynccontextmanager
async def instance_behind_proxy(
    settings: Settings,
) -> AsyncIterator[tuple[RunningApp, HoldingProxy]]:
    """A second instance on the same stores whose Redis traffic passes the proxy."""
    assert settings.redis_url
    async with HoldingProxy(settings.redis_url, APPLY_SHA) as proxy:
        async with running_app(msgspec.structs.replace(settings, redis_url=proxy.url)) as app:
            yield app, proxy


async def test_void_racing_an_inflight_batch_keeps_the_player_off_the_board(
    server: RunningApp,
    settings: Settings,
    client: httpx.AsyncClient,
    admin: Account,
    player: Account,
) -> None:
    """Finding 1: A commits a batch of the player, the void on B lands in Redis first,
    then A's apply arrives: the voided player must not come back."""
    assert server.services is not None
    game = (await create_game(client, admin, operator="sum"))["id"]
    async with (
        instance_behind_proxy(settings) as (a, proxy),
        httpx.AsyncClient(base_url=a.url + "/api/v1", timeout=30) as http_a,
    ):
        assert a.services is not None
        proxy.armed = True
        write = asyncio.create_task(post_score(http_a, player, game, 50))
        async with asyncio.timeout(10):
            await proxy.held.wait()  # committed in PostgreSQL, its Redis apply in flight
        r = await client.post(f"/admin/users/{player.id}/void", headers=admin.headers)
        assert r.status_code == 200, r.text
        proxy.release.set()
        assert (await write).status_code == 200
        index: BoardIndex = a.services.extras["index"]  # type: ignore[assignment]
        assert not index.stale  # the apply ran (and was refused), it did not fail
        assert await read_board(server.services.redis, settings.redis_prefix, game) == []
        await assert_index_matches_log(server)
