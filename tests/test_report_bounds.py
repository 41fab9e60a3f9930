"""Reports have a cost bound: a rate limit, a few slots per process (writes keep their
connections), and a statement timeout; over any of them the answer is 429 or 503."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx

from tests.boards_helpers import create_game, post_score
from tests.conftest import (
    Account,
    RunningApp,
    Stores,
    drop_test_state,
    make_admin,
    make_settings,
    register_and_login,
    running_app,
)
from tests.ws_helpers import open_ws, recv, send


@contextlib.asynccontextmanager
async def _app(
    stores: Stores, **overrides: object
) -> AsyncIterator[tuple[RunningApp, httpx.AsyncClient, Account, str]]:
    settings = make_settings(stores, **overrides)
    try:
        async with (
            running_app(settings) as app,
            httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=30) as http,
        ):
            admin = await make_admin(app, http)
            game = (await create_game(http, admin))["id"]
            assert (await post_score(http, admin, game, 5)).status_code == 200
            yield app, http, admin, game
    finally:
        await drop_test_state(settings)


def _decade(game: str | None = None) -> dict[str, object]:
    today = datetime.now(UTC).date()
    params: dict[str, object] = {
        "start": (today - timedelta(days=3650)).isoformat(),
        "end": (today + timedelta(days=1)).isoformat(),
    }
    if game is not None:
        params["game"] = game
    return params


async def test_reports_over_the_rate_limit_get_429(stores: Stores) -> None:
    async with _app(stores, reports_per_minute_per_user=2) as (app, http, admin, game):
        for _ in range(2):
            r = await http.get("/reports/top", params=_decade(game), headers=admin.headers)
            assert r.status_code == 200, r.text
        r = await http.get("/reports/top", params=_decade(game), headers=admin.headers)
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        # The WebSocket endpoint counts against the same limit.
        async with await open_ws(app, "reports", admin) as ws:
            await send(ws, {"type": "report", **_decade(game)})
            assert (await recv(ws))["code"] == "rate_limited"
        # Another user has their own allowance.
        other = await register_and_login(http)
        r = await http.get("/reports/top", params=_decade(game), headers=other.headers)
        assert r.status_code == 200, r.text


async def test_with_every_report_slot_taken_writes_still_commit(stores: Stores) -> None:
    async with _app(stores, report_concurrency=2, report_timeout_ms=200) as (
        app,
        http,
        admin,
        game,
    ):
        assert app.services is not None
        slots = app.podium.boards.report_slots
        for _ in range(2):
            await slots.acquire()
        try:
            r = await http.get("/reports/top", params=_decade(game), headers=admin.headers)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "reports_busy"
            assert (await post_score(http, admin, game, 9)).status_code == 200
        finally:
            for _ in range(2):
                slots.release()
        r = await http.get("/reports/top", params=_decade(game), headers=admin.headers)
        assert r.status_code == 200 and r.json()["result"][0]["score"] == 9, r.text


async def test_a_report_over_the_statement_timeout_is_503(stores: Stores) -> None:
    async with _app(stores, report_timeout_ms=300) as (app, http, admin, game):
        assert app.services is not None
        # A lock the report must wait for makes it slow on demand; lock waits count
        # toward the statement timeout.
        async with app.services.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE score_events IN ACCESS EXCLUSIVE MODE")
            r = await http.get("/reports/top", params=_decade(), headers=admin.headers)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "report_timeout"
        async with await open_ws(app, "reports", admin) as ws:
            async with app.services.pool.acquire() as conn, conn.transaction():
                await conn.execute("LOCK TABLE score_events IN ACCESS EXCLUSIVE MODE")
                await send(ws, {"type": "report", **_decade(game)})
                assert (await recv(ws))["code"] == "report_timeout"
        r = await http.get("/reports/top", params=_decade(), headers=admin.headers)
        assert r.status_code == 200, r.text
