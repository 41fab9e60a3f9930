"""Top-players reports over any UTC date range, from the event log.

A player's value in the range follows the game's operator over the range's writes
only (best of, sum of, last of, minus sum of); across games it is the sum over the
`desc` games, like the global board.

A report may scan years of the log, so each has a cost bound: a per-user and per-IP
rate limit (429), at most `report_concurrency` running per process (the writer's pool
always keeps connections for writes; a report that finds no slot in time is 503
`reports_busy`), and a server-side statement timeout (503 `report_timeout`).
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, date, datetime, time

import asyncpg
import msgspec

from podium.auth.tokens import Principal
from podium.boards.names import usernames
from podium.boards.runtime import Boards
from podium.boards.submit import enforce_limits
from podium.errors import invalid, not_found, unavailable
from podium.services import Services
from podium.store.db import store_errors
from podium.validation import MAX_REPORT_LIMIT

MAX_RANGE_DAYS = 3660


class ReportRow(msgspec.Struct):
    rank: int
    user_id: int
    username: str
    score: int
    games_played: int
    games: int
    last_played_at: datetime


class Report(msgspec.Struct):
    game: str | None
    start: date
    end: date
    limit: int
    result: list[ReportRow]
    total_count: int


_PER_GAME = """
WITH per_game AS (
    SELECT e.user_id, e.game_id, g.sort_order,
        CASE g.operator
            WHEN 'best' THEN CASE WHEN g.sort_order = 'desc' THEN max(e.input)
                                  ELSE min(e.input) END
            WHEN 'sum' THEN sum(e.input)
            WHEN 'decr' THEN -sum(e.input)
            ELSE (array_agg(e.input ORDER BY e.seq DESC))[1]
        END::bigint AS value,
        count(*) AS sessions,
        max(e.created_at) AS last_at
    FROM score_events e JOIN games g ON g.id = e.game_id
    WHERE e.created_at >= $1 AND e.created_at < $2 AND e.voided_at IS NULL
      AND ($3::text IS NULL OR e.game_id = $3)
    GROUP BY e.user_id, e.game_id, g.sort_order, g.operator
), per_user AS (
    SELECT user_id,
        sum(value) FILTER (WHERE $3::text IS NOT NULL OR sort_order = 'desc')::bigint AS value,
        sum(sessions)::bigint AS sessions,
        count(DISTINCT game_id) AS games,
        max(last_at) AS last_at
    FROM per_game GROUP BY user_id
)
SELECT user_id, value, sessions, games, last_at, count(*) OVER () AS total
FROM per_user WHERE value IS NOT NULL
ORDER BY value {direction}, last_at, user_id
LIMIT $4
"""


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, UTC)


async def _rate_limit(services: Services, who: Principal, client_addr: str | None) -> None:
    settings, keys = services.settings, services.keys
    caller = str(who.user_id) if who.user_id is not None else f"svc:{who.credential}"
    counters = [(keys.rate("report", caller), settings.reports_per_minute_per_user, 60)]
    if client_addr is not None:
        counters.append(
            (keys.rate("report-ip", client_addr), settings.reports_per_minute_per_ip, 60)
        )
    await enforce_limits(services, counters)


async def _fetch(
    services: Services, slots: asyncio.Semaphore, query: str, *args: object
) -> list[asyncpg.Record]:
    """Run the report query in a slot, under the statement timeout."""
    timeout_ms = max(1, services.settings.report_timeout_ms)
    try:
        async with asyncio.timeout(timeout_ms / 1000):
            await slots.acquire()
    except TimeoutError:
        raise unavailable("too many reports are running; retry", code="reports_busy") from None
    try:
        with store_errors("the report store is unavailable"):
            acquire = services.pool.acquire(timeout=timeout_ms / 1000)
            async with acquire as conn, conn.transaction(readonly=True):
                # SET LOCAL: the timeout ends with this transaction, not with the connection.
                await conn.execute(
                    "SELECT set_config('statement_timeout', $1, true)", f"{timeout_ms}ms"
                )
                try:
                    rows: list[asyncpg.Record] = await conn.fetch(query, *args)
                    return rows
                except asyncpg.QueryCanceledError:
                    raise unavailable(
                        f"the report took over {timeout_ms} ms; ask for a shorter range",
                        code="report_timeout",
                    ) from None
    finally:
        slots.release()


async def top_report(
    services: Services,
    boards: Boards,
    who: Principal,
    client_addr: str | None,
    start: date,
    end: date,
    limit: int = 10,
    game: str | None = None,
) -> Report:
    """The top `limit` players of [start, end) (UTC dates, end exclusive), for `who`
    (rate limited per caller, and per `client_addr` when given)."""
    errors = {}
    if end <= start:
        errors["end"] = "must be after start (end is exclusive)"
    elif (end - start).days > MAX_RANGE_DAYS:
        errors["end"] = f"range over {MAX_RANGE_DAYS} days"
    if not 1 <= limit <= MAX_REPORT_LIMIT:
        errors["limit"] = f"1..{MAX_REPORT_LIMIT}"
    if errors:
        raise invalid("report range is invalid", errors)
    await _rate_limit(services, who, client_addr)
    direction = "DESC"
    if game is not None:
        with store_errors("the report store is unavailable"):
            found = await boards.games.get(game)
        if found is None:
            raise not_found("no such game")
        direction = "DESC" if found.order == "desc" else "ASC"
    rows = await _fetch(
        services,
        boards.report_slots,
        _PER_GAME.format(direction=direction),
        _midnight(start),
        _midnight(end),
        game,
        limit,
    )
    names = await usernames(services, [r["user_id"] for r in rows])
    result = [
        ReportRow(
            i + 1,
            r["user_id"],
            names.get(r["user_id"], f"user{r['user_id']}"),
            int(r["value"]),
            int(r["sessions"]),
            int(r["games"]),
            r["last_at"],
        )
        for i, r in enumerate(rows)
    ]
    total = int(rows[0]["total"]) if rows else 0
    return Report(game, start, end, limit, result, total)


def _cell(text: str) -> str:
    # Spreadsheets run a cell that starts with one of these as a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def report_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["rank", "user_id", "username", "score", "games_played", "games", "last_played_at"]
    )
    for r in report.result:
        writer.writerow(
            [
                r.rank,
                r.user_id,
                _cell(r.username),
                r.score,
                r.games_played,
                r.games,
                r.last_played_at.isoformat(),
            ]
        )
    return out.getvalue()
