"""The one clock: real UTC time, or a source a test sets; reads follow it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import httpx

from podium.clock import Clock
from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp


def test_real_clock_is_aware_utc() -> None:
    before = datetime.now(UTC)
    moment = Clock().now()
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
    assert before <= moment <= datetime.now(UTC)


def test_set_source_and_back() -> None:
    clock = Clock()
    # 23:30 at UTC-2 is already the next UTC day.
    clock.set(lambda: datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2))))
    assert clock.now() == datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
    assert clock.today() == date(2026, 3, 2)
    clock.set(None)
    assert clock.today() == datetime.now(UTC).date()


async def test_board_reads_pick_the_period_of_the_moved_clock(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    assert server.services is not None
    game = (await create_game(client, admin))["id"]
    moved = datetime.now(UTC) - timedelta(days=2)
    server.services.clock.set(lambda: moved)
    try:
        assert (await post_score(client, player, game, 42)).status_code == 200
        r = await client.get(
            f"/leaderboards/{game}", params={"period": "day"}, headers=player.headers
        )
        assert r.status_code == 200, r.text
        assert r.json()["period_start"] == moved.date().isoformat()
        assert [e["user_id"] for e in r.json()["entries"]] == [player.id]
    finally:
        server.services.clock.set(None)
