"""Void a user (cheater): events kept but marked void, the user leaves every board."""

from __future__ import annotations

import logging

import msgspec

from podium.boards.members import GLOBAL, board_id
from podium.boards.runtime import Boards
from podium.boards.scripts import ApplyEvent, BoardRow, expire_at
from podium.errors import not_found, unavailable
from podium.services import Services
from podium.store.db import is_unavailable
from podium.validation import INT64_MAX

log = logging.getLogger("podium.void")


class VoidOut(msgspec.Struct):
    user_id: int
    voided_events: int
    boards: list[str]


_DELETE_SQL = """
WITH d AS (
    DELETE FROM board_values WHERE user_id = $1
    RETURNING game_id, period, period_start, last_seq
)
SELECT d.game_id, d.period, d.period_start, d.last_seq,
       coalesce(g.sort_order, 'desc') = 'desc' AS descending
FROM d LEFT JOIN games g ON g.id = d.game_id
"""


async def void_user(services: Services, boards: Boards, user_id: int) -> VoidOut:
    """Mark the user's events void, drop their board rows, and update Redis with diffs."""
    if not 1 <= user_id <= INT64_MAX:  # no such user can exist; the query would refuse it
        raise not_found("no such user")
    try:
        async with services.pool.acquire() as conn, conn.transaction():
            # The writer's per-user lock: no batch of this user interleaves with the void.
            await conn.execute(
                "SELECT pg_advisory_xact_lock("
                "hashtextextended('podium:user:' || $1::bigint::text, 0))",
                user_id,
            )
            found = await conn.fetchval(
                "UPDATE users SET voided_at = coalesce(voided_at, now()) WHERE id = $1"
                " RETURNING id",
                user_id,
            )
            if found is None:
                raise not_found("no such user")
            status = await conn.execute(
                "UPDATE score_events SET voided_at = now()"
                " WHERE user_id = $1 AND voided_at IS NULL",
                user_id,
            )
            rows = await conn.fetch(_DELETE_SQL, user_id)
    except Exception as exc:
        if is_unavailable(exc):
            raise unavailable("the score store is unavailable; nothing was voided") from None
        raise
    ids = [board_id(r["game_id"], r["period"], r["period_start"]) for r in rows]
    # Each removal carries the version of the row it deleted: Redis keeps it as a
    # tombstone, so a batch of this user that committed before the void (its version
    # is at most that) and reaches Redis after it is refused.
    removals = [
        BoardRow(
            board,
            "",
            0,
            r["last_seq"],
            True if r["game_id"] == GLOBAL else r["descending"],
            expire_at(r["period"], r["period_start"], services.settings.retention_days),
        )
        for board, r in zip(ids, rows, strict=True)
    ]
    try:
        # During a rebuild this reaches the boards aside too; its tombstones win over
        # the rebuild's snapshot in either order.
        if removals:
            await boards.scripts.apply([ApplyEvent("", user_id, removals)])
    except Exception as exc:
        log.warning("redis void failed; index marked stale: %s", exc)
        boards.index.mark_stale()
    return VoidOut(user_id=user_id, voided_events=int(status.split()[-1]), boards=sorted(ids))
