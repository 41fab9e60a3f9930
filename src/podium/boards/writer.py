"""The group-commit writer: one per process, one transaction per batch of writes.

Writes queue up; a single loop takes what is waiting (up to `max_batch`, or what
arrives within `window_s` of the first), applies the whole batch in PostgreSQL with
one statement (`podium_apply_scores`, committed before it returns), then applies
the committed board rows to Redis with one EVALSHA of apply.lua (in the order the
commits finished), and only then resolves each caller. Up to `in_flight` batches
commit at once; a user (or an event id) is in at most one of them, so a user's
writes still commit in arrival order, each batch seeing the previous one's rows. A
write is acknowledged only after its commit; a PostgreSQL failure fails the batch
with 503, never a silent success. A Redis failure does not fail the write (it is
durable): the index is marked stale and rebuilt from the log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from podium import metrics
from podium.boards.index import BoardIndex
from podium.boards.members import GLOBAL, board_id
from podium.boards.scripts import ApplyEvent, BoardRow, Scripts, set_row
from podium.errors import ApiError, invalid, unavailable
from podium.periods import EPOCH, starts_for
from podium.store.db import is_bad_data, is_unavailable

log = logging.getLogger("podium.writer")

MAX_BATCH = 256
WINDOW_S = 0.002
# Writes waiting for a batch: beyond this the store is not keeping up and a caller is
# told so at once (503) instead of queueing without bound.
MAX_PENDING = 16 * MAX_BATCH
# Batches committing at once. The per-user advisory locks of podium_apply_scores and
# the version-guarded apply.lua make overlapping commits safe; two keep PostgreSQL
# busy while the server prepares the next batch and applies the last to Redis.
IN_FLIGHT = 2
# A user's writes in one batch: podium_apply_scores runs one statement per round (a
# user's r-th write of the batch), so this bounds a batch's statements when one user
# (or one credential writing for one user) floods the writer.
MAX_PER_USER = 16
RECENT_RANKS = 100_000

_APPLY_SQL = (
    "SELECT * FROM podium_apply_scores($1::uuid[], $2::bigint[], $3::text[], $4::text[],"
    " $5::bigint[], $6::text[], $7::text[], $8::timestamptz[], $9::date[], $10::date[],"
    " $11::date[], $12::text[], $13::text[])"
)


class Write(msgspec.Struct, kw_only=True):
    """One validated score write, ready for the log."""

    event_id: uuid.UUID
    user_id: int
    game: str
    descending: bool
    kind: str  # "score" | "action"
    input: int | None
    action: str | None
    payload_hash: str
    created_at: datetime
    client_addr: str
    credential: str


class Outcome(msgspec.Struct, kw_only=True):
    """What the log said about one write. `response` is set for ok/duplicate."""

    status: str
    seq: int | None = None
    value_before: int | None = None
    value_after: int | None = None
    response: dict[str, Any] | None = None
    rank: int | None = None
    previous_rank: int | None = None


def refusal(exc: BaseException) -> ApiError:
    """What the caller of one write PostgreSQL refused is told: never a 500."""
    if is_unavailable(exc):
        return unavailable("the score store is unavailable; nothing was written")
    if is_bad_data(exc):
        return invalid("the score store refused this write's values", {"body": "refused"})
    log.error("write refused by the store: %r", exc)
    return unavailable("the score store could not take this write", code="store_error")


def apply_args(writes: Sequence[Write]) -> tuple[list[Any], ...]:
    """The arguments of `_APPLY_SQL` for a batch: one array per column."""
    starts = [starts_for(w.created_at) for w in writes]
    return (
        [w.event_id for w in writes],
        [w.user_id for w in writes],
        [w.game for w in writes],
        [w.kind for w in writes],
        [w.input for w in writes],
        [w.action for w in writes],
        [w.payload_hash for w in writes],
        [w.created_at for w in writes],
        [s["day"] for s in starts],
        [s["week"] for s in starts],
        [s["month"] for s in starts],
        [w.client_addr for w in writes],
        [w.credential for w in writes],
    )


def rows_to_apply(write: Write, record: asyncpg.Record, retention_days: int) -> list[BoardRow]:
    rows = []
    ms = int(write.created_at.timestamp() * 1000)
    for game, period, start, value, reached, last in zip(
        record["b_games"],
        record["b_periods"],
        record["b_starts"],
        record["b_values"],
        record["b_reached"],
        record["b_last"],
        strict=True,
    ):
        desc = True if game == GLOBAL else write.descending
        # The row's value was reached by this event, unless it is a global row this
        # event left unchanged; then Redis keeps the time it already has.
        reached_ms = ms if reached == record["seq"] else None
        rows.append(
            set_row(
                board_id(game, period, start),
                period,
                start,
                write.user_id,
                value,
                reached,
                last,
                desc,
                retention_days,
                reached_ms,
            )
        )
    return rows


class _Pending:
    __slots__ = ("future", "queued", "write")

    def __init__(self, write: Write, future: asyncio.Future[Outcome], queued: float) -> None:
        self.write = write
        self.future = future
        self.queued = queued


def _fail(batch: Sequence[_Pending], exc: BaseException) -> None:
    # A caller that went away cancelled its future; its write may still commit.
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)


class Writer:
    """Batches writes into one PostgreSQL statement and one Redis script call."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        scripts: Scripts,
        index: BoardIndex,
        retention_days: int,
        *,
        max_batch: int = MAX_BATCH,
        window_s: float = WINDOW_S,
        max_pending: int = MAX_PENDING,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self.pool = pool
        self.scripts = scripts
        self.index = index
        self.retention_days = retention_days
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_pending = max_pending
        self.in_flight = max(1, in_flight)
        self._pending: list[_Pending] = []
        # Batches committing now, and the users and event ids they hold: a write of a
        # busy user waits for the next batch, so a user's writes commit in order.
        self._committing: set[asyncio.Task[None]] = set()
        self._busy_users: set[int] = set()
        self._busy_events: set[uuid.UUID] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Users whose batch may have committed although we saw a connection error:
        # their rows are re-applied to Redis once PostgreSQL answers again.
        self._uncertain: set[int] = set()
        self._closing = False
        self._finishing: collections.deque[asyncio.Task[None]] = collections.deque()
        # Ranks of recent events, for replays that arrive before the log has them.
        self._recent: collections.OrderedDict[int, tuple[int | None, int | None]] = (
            collections.OrderedDict()
        )
        self._rank_backlog: list[Outcome] = []
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="podium-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, write: Write) -> Outcome:
        """Queue a write and wait until it is committed (and applied to Redis)."""
        if self._closing or self._task is None:
            raise unavailable("the server is shutting down")
        if len(self._pending) >= self.max_pending:
            raise unavailable("too many writes are waiting; retry", code="overloaded")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(write, future, time.perf_counter()))
        self._wake.set()
        # No shield: if this caller is cancelled its future is, and the batch skips it
        # (the write itself still commits, as a shielded one would).
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._pending:
                self._wake.clear()
                if self._closing:
                    break
                continue
            if len(self._pending) < self.max_batch and self.window_s > 0 and not self._closing:
                await asyncio.sleep(self.window_s)
            # At most `in_flight` commits, and the Redis applies at most that far behind.
            self._prune()
            while len(self._committing) >= self.in_flight or len(self._finishing) > self.in_flight:
                oldest = [self._finishing[0]] if self._finishing else []
                await asyncio.wait(
                    [*self._committing, *oldest], return_when=asyncio.FIRST_COMPLETED
                )
                self._prune()
            batch = self._take()
            if not batch:
                # Every waiting write belongs to a user whose batch is committing.
                if self._committing:
                    await asyncio.wait(self._committing, return_when=asyncio.FIRST_COMPLETED)
                continue
            metrics.BATCH_SIZE.observe(len(batch))
            if not self._pending:
                self._wake.clear()
            task = asyncio.create_task(self._commit_batch(batch))
            self._committing.add(task)
            task.add_done_callback(self._committing.discard)
        while self._committing:
            await asyncio.wait(self._committing)
        while self._finishing:
            await asyncio.wait([self._finishing[0]])
            self._prune()
        if self._flusher is not None:
            await self._flusher

    def _take(self) -> list[_Pending]:
        """The next batch, in arrival order, leaving for later the writes of a user (or
        an event id) that a committing batch holds, a repeated event id, and a user's
        writes past `MAX_PER_USER`."""
        busy_users, busy_events = self._busy_users, self._busy_events
        batch: list[_Pending] = []
        left: list[_Pending] = []
        held: set[int] = set()  # users with a write left behind: their later ones wait
        events: set[uuid.UUID] = set()
        per_user: dict[int, int] = {}
        pending = self._pending
        for n, item in enumerate(pending):
            if len(batch) >= self.max_batch:
                left.extend(pending[n:])
                break
            user, event = item.write.user_id, item.write.event_id
            count = per_user.get(user, 0)
            if (
                user in busy_users
                or user in held
                or event in busy_events
                or event in events
                or count >= MAX_PER_USER
            ):
                held.add(user)
                left.append(item)
                continue
            batch.append(item)
            events.add(event)
            per_user[user] = count + 1
        self._pending = left
        busy_users.update(p.write.user_id for p in batch)
        busy_events.update(events)
        return batch

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            await self._process(batch)
        except Exception as exc:  # a bug must not kill the loop or strand callers
            log.exception("writer batch failed")
            _fail(batch, exc)
        finally:
            for item in batch:
                self._busy_users.discard(item.write.user_id)
                self._busy_events.discard(item.write.event_id)
            # Writes left behind for these users can go now.
            if self._pending:
                self._wake.set()

    async def _process(self, batch: list[_Pending]) -> None:
        try:
            records = await self._commit([p.write for p in batch])
        except Exception as exc:
            if is_unavailable(exc):
                metrics.POSTGRES_ERRORS.inc()
                log.warning("postgres unavailable: %s", exc)
                _fail(batch, unavailable("the score store is unavailable; nothing was written"))
                return
            if len(batch) > 1:
                # One bad write must not fail its neighbours: retry them one by one.
                for item in batch:
                    await self._process([item])
                return
            # The one write PostgreSQL refused fails alone, with its own answer.
            _fail(batch, refusal(exc))
            return
        # The Redis apply of this batch overlaps the next batches' commits; applies stay
        # in the order the commits finished because each waits for the previous one (a
        # user's next batch starts only after this commit, so its apply comes after).
        previous = self._finishing[-1] if self._finishing else None
        task = asyncio.create_task(self._finish(previous, batch, records))
        self._finishing.append(task)

    def _prune(self) -> None:
        while self._finishing and self._finishing[0].done():
            self._finishing.popleft()

    async def _finish(
        self,
        previous: asyncio.Task[None] | None,
        batch: list[_Pending],
        records: list[asyncpg.Record],
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            outcomes = [self._outcome(p.write, r) for p, r in zip(batch, records, strict=True)]
            applied = [
                (i, ApplyEvent(board_id(p.write.game, "all", EPOCH), p.write.user_id, rows))
                for i, (p, rec) in enumerate(zip(batch, records, strict=True))
                if rec["status"] == "ok"
                for rows in [rows_to_apply(p.write, rec, self.retention_days)]
            ]
            if applied:
                ranks = await self._apply_redis([e for _, e in applied])
                if ranks is not None:
                    for (i, _), (before, after) in zip(applied, ranks, strict=True):
                        outcomes[i].previous_rank, outcomes[i].rank = before, after
                    self._remember_ranks([outcomes[i] for i, _ in applied])
            replayed: set[int] = set()
            for item, outcome in zip(batch, outcomes, strict=True):
                if outcome.status == "duplicate":
                    self._recall_ranks(outcome)
                    replayed.add(item.write.user_id)
            if replayed:
                # A replay may be the retry of a write whose instance died between its
                # commit and its Redis apply: nothing else would ever apply it. The
                # rows are version-guarded, so re-applying what Redis has is a no-op.
                self._uncertain.update(replayed)
                await self._repair()
            for item, outcome in zip(batch, outcomes, strict=True):
                if not item.future.done():
                    item.future.set_result(outcome)
            # One sample per batch: the wait of its oldest write.
            metrics.WRITE_ACK_SECONDS.observe(time.perf_counter() - batch[0].queued)
            if self._uncertain:
                await self._repair()
        except Exception as exc:
            log.exception("writer finish failed")
            _fail(batch, exc)

    def _remember_ranks(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.seq is not None:
                self._recent[o.seq] = (o.rank, o.previous_rank)
        while len(self._recent) > RECENT_RANKS:
            self._recent.popitem(last=False)
        self._rank_backlog.extend(outcomes)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_ranks())

    def _recall_ranks(self, outcome: Outcome) -> None:
        """A replay of a recent event: its ranks may not be in the log yet."""
        response = outcome.response
        if response is None or response.get("rank") is not None or outcome.seq is None:
            return
        known = self._recent.get(outcome.seq)
        if known is not None:
            outcome.response = {**response, "rank": known[0], "previous_rank": known[1]}

    async def _flush_ranks(self) -> None:
        while self._rank_backlog:
            taken, self._rank_backlog = self._rank_backlog, []
            await self._store_ranks(taken)

    async def _commit(self, writes: Sequence[Write]) -> list[asyncpg.Record]:
        args = apply_args(writes)
        try:
            try:
                return await self._apply(args)
            except asyncpg.exceptions.InternalClientError:
                # A pooled connection that a dying server left broken fails before it
                # sends anything (store.db.fetchrow_retrying says why) and the pool drops
                # it; a replay would be harmless anyway (event ids). Once more, on a
                # fresh connection.
                return await self._apply(args)
        except Exception as exc:
            if is_unavailable(exc):
                self._uncertain.update(w.user_id for w in writes)
            raise

    async def _apply(self, args: tuple[list[Any], ...]) -> list[asyncpg.Record]:
        conn = await self.pool.acquire()
        try:
            # One statement outside an explicit transaction is its own transaction:
            # it has committed when the result arrives (one round trip).
            records: list[Any] = await conn.fetch(_APPLY_SQL, *args)
        finally:
            await self._release(conn)
        return records

    async def _release(self, conn: asyncpg.Connection) -> None:
        # The pool resets a connection on release; if that fails it drops the connection
        # and re-raises, which must not turn a committed batch into an error.
        try:
            await self.pool.release(conn)
        except Exception as exc:
            log.warning("postgres connection dropped on release: %r", exc)

    @staticmethod
    def _outcome(write: Write, record: asyncpg.Record) -> Outcome:
        status, before, after = record["status"], record["value_before"], record["value_after"]
        if status == "ok":
            # The response the log just stored, built here rather than decoded.
            response: dict[str, Any] | None = {
                "game": write.game,
                "user_id": write.user_id,
                "score": after,
                "delta": after - (before or 0),
                "rank": None,
                "previous_rank": None,
                "duplicate": False,
            }
        else:
            raw = record["response"]
            response = msgspec.json.decode(raw) if raw is not None else None
        return Outcome(
            status=status,
            seq=record["seq"],
            value_before=before,
            value_after=after,
            response=response,
        )

    async def _apply_redis(
        self, events: list[ApplyEvent]
    ) -> list[tuple[int | None, int | None]] | None:
        try:
            return await self.scripts.apply(events)
        except Exception as exc:
            metrics.REDIS_ERRORS.inc()
            log.warning("redis apply failed; index marked stale: %s", exc)
            self.index.mark_stale()
            return None

    async def _store_ranks(self, outcomes: list[Outcome]) -> None:
        """Keep the ranks of the first response, so a replayed event gets them too."""
        try:
            await self.pool.execute(
                "INSERT INTO score_ranks (seq, rank, previous_rank)"
                " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])"
                " ON CONFLICT (seq) DO NOTHING",
                [o.seq for o in outcomes],
                [o.rank for o in outcomes],
                [o.previous_rank for o in outcomes],
            )
        except Exception as exc:
            log.warning("could not store ranks: %s", exc)

    async def _repair(self) -> None:
        users, self._uncertain = list(self._uncertain), set()
        from podium.boards.index import load_rows

        try:
            await load_rows(self.pool, self.scripts, self.retention_days, users, publish=True)
        except Exception as exc:
            if is_unavailable(exc):
                # PostgreSQL went away again: try after the next commit. Marking the index
                # stale here would send every read to the store that is down.
                self._uncertain.update(users)
                log.warning("repair of uncertain writes postponed: %s", exc)
                return
            log.warning("repair of uncertain writes failed; index marked stale: %s", exc)
            self.index.mark_stale()


__all__ = ["ApiError", "Outcome", "Write", "Writer", "apply_args", "is_unavailable", "refusal"]
