"""Local fan-out: this process's sockets, grouped by the board they watch.

The hub receives board changes from the broker (cross-instance fan-out), folds them
into each watched board's top window, and on every tick pushes at most one message
per board: the net diff, encoded once, the same text to every socket. Pages beyond
the top window and my-score ranks are re-read on the tick when their board changed:
one read per distinct page and one pipelined batch of ranks per board.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from podium import metrics
from podium.auth.denylist import Denylist
from podium.auth.revocation import RecentRevocations, deny_ttl
from podium.auth.tokens import Principal
from podium.boards.members import board_id
from podium.boards.ranks import Page
from podium.boards.runtime import Boards
from podium.boards.sources import Board
from podium.errors import WS_GOING_AWAY, WS_PERIOD_ENDED, WS_REVOKED
from podium.periods import parse_period, period_start
from podium.protocol import NameChange, board_change_decoder, encode_text, name_change_decoder
from podium.realtime.broker import Broker, Event
from podium.realtime.direct import text_frame
from podium.realtime.feeds import Feed, PageKey, PageWatch, page_text, rank_text
from podium.realtime.live import live_page, live_top, renamed, servable
from podium.realtime.reads import BoardReads, Reads, TopRead
from podium.realtime.session import Session
from podium.realtime.session_core import Limits
from podium.services import Services

# How long a page or rank re-read that failed waits before the next try.
REFRESH_RETRY_S = 1.0
log = logging.getLogger("podium.hub")

TOP_N = 10


class Hub:
    """This process's sockets and the boards they watch."""

    def __init__(
        self,
        services: Services,
        boards: Boards,
        broker: Broker,
        limits: Limits | None = None,
        reads: Reads | None = None,
    ) -> None:
        self.services = services
        self.boards = boards
        self.broker = broker
        self.limits = limits or Limits()
        self.reads: Reads = reads or BoardReads(services, boards)
        self.keys = services.keys
        self.tick_s = max(services.settings.tick_ms, 1) / 1000
        self.refresh_retry_s = REFRESH_RETRY_S
        # A live page needs a tick within this long (else the ticker is stuck or late).
        self.live_max_age_s = max(1.0, 5 * self.tick_s)
        self.tick_at: datetime | None = None
        self.tick_mono = 0.0
        self.feeds: dict[str, Feed] = {}
        self.sessions: set[Session] = set()
        self.by_user: dict[int, set[Session]] = {}
        # Revocation subjects -> sessions: token family ids and credentials
        # (`user:<id>`, `service:<name>`), as announced on the revocations channel.
        self.by_family: dict[str, set[Session]] = {}
        self.recent_revocations = RecentRevocations()
        # The in-process denylist the guards read (auth/denylist.py): fed here from
        # the revocations channel, reloaded from Redis after every (re)subscription.
        self.denylist: Denylist = services.denylist
        self._deny_ttl = deny_ttl(services.settings.access_token_ttl)
        self._denials_subscribed = False
        self._channel_up = False
        self._denials_task: asyncio.Task[None] | None = None
        self._denials_retry_at = 0.0
        self._resync_generation = 0
        self._day = services.clock.today()
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh: asyncio.Task[None] | None = None
        # Counters for metrics and tests.
        self.ticks = 0
        self.pushes = 0
        self.page_reads = 0
        self.rank_batches = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        # Hooks, not queued events: the denylist must stop trusting itself the moment
        # the channel drops, not when the listener gets to it.
        self.broker.on_lost = self._channel_lost
        self.broker.on_synced = self._channel_synced
        confirmed = await self.broker.subscribe(self.services.keys.revocations)
        await self.broker.subscribe(self.services.keys.renames)
        # From here on a resubscription includes the revocations channel; before it,
        # a reload could finish before the channel is heard.
        self._denials_subscribed = True
        if confirmed:
            self._channel_up = True
            self._reload_denials()
        self._tasks = [
            asyncio.create_task(self._listen(), name="podium-hub-listen"),
            asyncio.create_task(self._ticker(), name="podium-hub-tick"),
        ]

    async def stop(self) -> None:
        """Close every socket with 1001 (clients reconnect elsewhere), then stop."""
        sessions = list(self.sessions)
        if sessions:
            await asyncio.wait(
                [asyncio.create_task(s.close(WS_GOING_AWAY)) for s in sessions], timeout=5
            )
        self.broker.on_lost = self.broker.on_synced = None
        for task in [*self._tasks, self._refresh, self._denials_task]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.broker.close()

    # -- sessions --------------------------------------------------------------------

    def sockets_of(self, user_id: int) -> int:
        return len(self.by_user.get(user_id, ()))

    def register(self, session: Session) -> None:
        self.sessions.add(session)
        p = session.principal
        if p.user_id is not None:
            self.by_user.setdefault(p.user_id, set()).add(session)
        for subject in session.subjects:
            self.by_family.setdefault(subject, set()).add(session)

    def unregister(self, session: Session) -> None:
        self.sessions.discard(session)
        p = session.principal
        if p.user_id is not None:
            _discard(self.by_user, p.user_id, session)
        for subject in session.subjects:
            _discard(self.by_family, subject, session)

    def rebind(self, session: Session, old: Principal) -> None:
        """The session re-authenticated: it now belongs to the new token's family."""
        if old.family:
            _discard(self.by_family, old.family, session)
        if session.principal.family:
            self.by_family.setdefault(session.principal.family, set()).add(session)

    def revoke(self, subject: str) -> None:
        """Close the sockets of a revoked family, user or service credential."""
        self.denylist.add(subject, self._deny_ttl)
        self.recent_revocations.add(subject, time.monotonic())
        for session in list(self.by_family.get(subject, ())):
            session.close_soon(WS_REVOKED)

    def _channel_lost(self) -> None:
        self._channel_up = False
        self.denylist.lost()

    def _channel_synced(self) -> None:
        self._channel_up = True
        self._reload_denials()

    def _reload_denials(self) -> None:
        """Every subscription is confirmed: reload the deny keys, then trust the copy."""
        if not self._denials_subscribed:
            return
        if self._denials_task is not None:
            self._denials_task.cancel()
        self._denials_task = asyncio.create_task(self._load_denials(), name="podium-denials")

    async def _load_denials(self) -> None:
        try:
            await self.denylist.resync(self.services.redis)
        except Exception as exc:  # RedisError, OSError: the guards keep asking Redis
            log.warning("denylist not reloaded", extra={"error": type(exc).__name__})
        if not self.denylist.trusted:
            # Redis failed or the table is full: the tick tries again a little later.
            self._denials_retry_at = time.monotonic() + self.refresh_retry_s

    def _retry_denials(self) -> None:
        # Only while the channel is up: a reload while it is down would trust a copy
        # that misses what is announced meanwhile (a loss voids a running reload).
        if (
            self.denylist.trusted
            or not self._channel_up
            or (self._denials_task is not None and not self._denials_task.done())
            or time.monotonic() < self._denials_retry_at
        ):
            return
        self._reload_denials()

    # -- watching boards ---------------------------------------------------------------

    async def acquire(self, game: str, period: str) -> Feed:
        """The feed of a board's current period, loaded; release it when done."""
        p = parse_period(period)
        start = period_start(p, self.services.clock.today())
        board = board_id(game, p, start)
        feed = self.feeds.get(board)
        if feed is None:
            feed = Feed(game, p, start)
            self.feeds[board] = feed
            feed.refs = 1
            try:
                await self._load(feed)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    feed.loaded.set_exception(exc)
                    feed.loaded.exception()  # mark retrieved: later waiters re-raise it
                else:
                    feed.loaded.cancel()
                await self._drop(feed)
                raise
            feed.loaded.set_result(None)
            return feed
        feed.refs += 1
        try:
            await asyncio.shield(feed.loaded)
        except BaseException:
            feed.refs -= 1
            raise
        return feed

    async def release(self, feed: Feed) -> None:
        feed.refs -= 1
        if feed.refs <= 0:
            await self._drop(feed)

    async def _drop(self, feed: Feed) -> None:
        if self.feeds.get(feed.board) is feed:
            del self.feeds[feed.board]
            await self.broker.unsubscribe(self.keys.channel(feed.board))

    async def _read_top(self, feed: Feed) -> TopRead:
        return await self.reads.top(feed.board, feed.game, feed.period, feed.start, TOP_N)

    async def _load(self, feed: Feed) -> None:
        # Subscribe before reading, so no change between the read and the
        # subscription is lost.
        generation = self.broker.generation
        confirmed = await self.broker.subscribe(self.keys.channel(feed.board))
        feed.generation = generation if confirmed else 0
        read = await self._read_top(feed)
        top = feed.top
        if top.seq > read.seq:
            # A change arrived while we read: keep it, push it as a diff next tick.
            current, newest = top.current, top.seq
            extras = top.total, top.reached, top.at
            top.reset(read.seq, read.rows)
            top.current, top.seq = current, newest
            top.total, top.reached, top.at = extras
            feed.dirty = True
        else:
            top.reset(read.seq, read.rows, read.total, read.reached, read.at)
            feed.live = live_top(top)

    def live_page(self, board: Board, limit: int, competition: bool) -> Page | None:
        """A top page of `board` from its window, when this process watches the board and
        the window is current to the last tick; else None (the caller reads the index)."""
        feed = self.feeds.get(board.id)
        if feed is None or feed.live is None or self.tick_at is None:
            return None
        if (
            feed.reload_due
            or not feed.generation
            or feed.generation < self.broker.generation  # reconnected: changes lost
            or not self.broker.up  # disconnected: changes are being lost now
            or not self.boards.index.ready  # Redis lost or rebuilding: resync to come
            or time.monotonic() - self.tick_mono > self.live_max_age_s  # ticks stalled
            or not servable(feed.live, limit)
        ):
            return None
        return live_page(
            feed.live, feed.game, feed.period, feed.start, limit, competition, self.tick_at
        )

    def watch_top(self, feed: Feed, session: Session, since: int | None) -> None:
        if session not in feed.watchers:
            metrics.WS_SUBSCRIPTIONS.labels("scoreboard").inc()
        feed.watchers.add(session)
        top = feed.top
        if since is not None and since == top.pushed_seq:
            from podium.protocol import Synced

            session.reply(Synced(board=feed.board, seq=top.pushed_seq))
        else:
            session.resync(feed.key, top.snapshot_text())

    def unwatch_top(self, feed: Feed, session: Session) -> None:
        if session in feed.watchers:
            metrics.WS_SUBSCRIPTIONS.labels("scoreboard").dec()
            feed.watchers.discard(session)

    def watch_page(self, feed: Feed, session: Session, key: PageKey, shape: str) -> str:
        watch = feed.pages.get(key)
        if watch is None:
            watch = feed.pages[key] = PageWatch(f"{feed.game}:{feed.period}:{key[0]}:{key[1]}")
        shapes = watch.watchers.setdefault(session, set())
        if shape not in shapes:
            metrics.WS_SUBSCRIPTIONS.labels("scores").inc()
        shapes.add(shape)
        return watch.sub

    def unwatch_page(self, feed: Feed, session: Session, key: PageKey, shape: str) -> None:
        watch = feed.pages.get(key)
        if watch is None:
            return
        shapes = watch.watchers.get(session)
        if shapes is not None:
            if shape in shapes:
                metrics.WS_SUBSCRIPTIONS.labels("scores").dec()
            shapes.discard(shape)
            if not shapes:
                del watch.watchers[session]
        if not watch.watchers:
            del feed.pages[key]

    async def send_page(self, feed: Feed, session: Session, key: PageKey, shape: str) -> None:
        """The page now, to one socket that just subscribed."""
        page = await self.reads.page(feed.game, feed.period, feed.start, key[0], key[1])
        watch = feed.pages.get(key)
        sub = watch.sub if watch else f"{feed.game}:{feed.period}:{key[0]}:{key[1]}"
        session.reply(page_text(feed, sub, key, page, shape))

    async def watch_rank(self, feed: Feed, session: Session, user_id: int) -> None:
        sessions = feed.mine.setdefault(user_id, set())
        if session not in sessions:
            metrics.WS_SUBSCRIPTIONS.labels("my-score").inc()
        sessions.add(session)
        found = await self.reads.ranks(feed.board, [user_id])
        state = found.get(user_id, (None, None, 0))
        feed.last_rank[user_id] = state
        session.reply(rank_text(feed, state))

    def unwatch_rank(self, feed: Feed, session: Session, user_id: int) -> None:
        sessions = feed.mine.get(user_id)
        if sessions is not None:
            if session in sessions:
                metrics.WS_SUBSCRIPTIONS.labels("my-score").dec()
            sessions.discard(session)
            if not sessions:
                del feed.mine[user_id]
                feed.last_rank.pop(user_id, None)

    # -- the listener: one per process ---------------------------------------------------

    async def _listen(self) -> None:
        async for event in self.broker.listen():
            try:
                self.deliver(event)
            except Exception:
                log.exception("bad pub/sub message")

    def deliver(self, event: Event) -> None:
        """Take one broker event: a revocation, a board change, or a RESYNC."""
        if not isinstance(event, tuple):  # RESYNC
            self._resync_generation = self.broker.generation
            return
        channel, data = event
        if channel == self.services.keys.revocations:
            self.revoke(data.decode(errors="replace"))
            return
        if channel == self.services.keys.renames:
            self.rename(name_change_decoder.decode(data))
            return
        feed = self.feeds.get(self.keys.board_of_channel(channel))
        if feed is None:
            return
        change = board_change_decoder.decode(data)
        if change.resync:
            feed.reload_due = True
        elif feed.top.fold(change):
            if feed.dirty:
                metrics.PUSHES_COALESCED.inc()
            elif change.ts:
                feed.published_ms = change.ts
            feed.dirty = True

    def rename(self, change: NameChange) -> None:
        """A display name changed: the windows holding that user show the new one (in
        snapshots, the next diffs that carry the row, and top pages from memory)."""
        for feed in self.feeds.values():
            if feed.top.rename(change.user_id, change.username) and feed.live is not None:
                feed.live = renamed(feed.live, change.user_id, change.username)

    # -- the tick: at most one push per board ------------------------------------------

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += self.tick_s
            delay = deadline - loop.time()
            if delay < 0:
                deadline = loop.time()  # behind: don't burst to catch up
                delay = 0
            await asyncio.sleep(delay)
            try:
                await self.tick()
            except Exception:
                log.exception("tick failed")

    async def tick(self) -> None:
        self.ticks += 1
        self._check_rollover()
        self._retry_denials()
        generation = self._resync_generation
        for feed in self.feeds.values():
            # Loaded before the broker's latest (re)connection: changes may have been
            # lost in between, so re-read it (one snapshot per socket).
            if feed.generation < generation and feed.loaded.done():
                feed.reload_due = True
                feed.generation = generation
        for feed in [f for f in self.feeds.values() if f.reload_due and f.loaded.done()]:
            await self._reload(feed)
        dirty = [f for f in self.feeds.values() if f.dirty and f.loaded.done()]
        if dirty:
            await self._push_tops(dirty)
        # Every window is now current to this tick (changes that arrive from here on wait
        # for the next one): what a live top page's `as_of` says.
        self.tick_at = self.services.clock.now()
        self.tick_mono = time.monotonic()
        if self._refresh is None or self._refresh.done():
            now = time.monotonic()
            due = [f for f in self.feeds.values() if f.refresh_due and now >= f.refresh_after]
            if due:
                for feed in due:
                    feed.refresh_due = False
                self._refresh = asyncio.create_task(self._refresh_reads(due))

    async def refreshed(self) -> None:
        """Wait for the page and rank re-reads the last tick started, if any."""
        if self._refresh is not None:
            await asyncio.shield(self._refresh)

    def _check_rollover(self) -> None:
        day = self.services.clock.today()
        if day == self._day:
            return
        self._day = day
        for feed in list(self.feeds.values()):
            if feed.period == "all" or feed.start == period_start(feed.period, day):
                continue
            # The period's board is final now; the client reconnects (or resubscribes)
            # to the new period's board.
            sessions = set(feed.watchers)
            for watch in feed.pages.values():
                sessions.update(watch.watchers)
            for mine in feed.mine.values():
                sessions.update(mine)
            for session in sessions:
                session.close_soon(WS_PERIOD_ENDED)

    async def _reload(self, feed: Feed) -> None:
        try:
            read = await self._read_top(feed)
        except Exception as exc:
            log.warning("board resync failed", extra={"board": feed.board, "error": repr(exc)})
            return  # reload_due stays set: try again next tick
        feed.reload_due = False
        feed.dirty = False
        feed.top.reset(read.seq, read.rows, read.total, read.reached, read.at)
        feed.live = live_top(feed.top)
        text = feed.top.snapshot_text()
        for session in feed.watchers:
            session.resync(feed.key, text)
        feed.refresh_due = bool(feed.pages or feed.mine)

    async def _push_tops(self, feeds: list[Feed]) -> None:
        names: dict[int, str] = {}
        while True:
            # Changes keep folding in while we await the names: look again until the
            # tops hold nobody we have no name for.
            unnamed: set[int] = set()
            for feed in feeds:
                unnamed |= feed.top.unnamed()
            unnamed -= names.keys()
            if not unnamed:
                break
            found = await self.reads.names(unnamed)
            names.update({uid: found.get(uid, f"user{uid}") for uid in unnamed})
        for feed in feeds:
            feed.dirty = False
            if feed.pages or feed.mine:
                feed.refresh_due = True
            diff = feed.top.take_diff(names)
            feed.live = live_top(feed.top)  # what this tick made current, for top pages
            if diff is None or not feed.watchers:
                continue
            text = encode_text(diff)  # once, for every socket on this board
            frame = text_frame(text)  # and framed once: server frames are not masked
            snapshot = feed.top.snapshot_text
            sent = 0
            for session in feed.watchers:
                sent += session.push(feed.key, text, snapshot, frame)
            self.pushes += 1
            # Counted once per board, not per socket: a lock per socket would show.
            metrics.PUSHES_SENT.inc(sent)
            if sent < len(feed.watchers):
                metrics.SLOW_DROPS.inc(len(feed.watchers) - sent)
            if feed.published_ms:
                lag = time.time() - feed.published_ms / 1000
                metrics.PUBSUB_LAG.observe(max(0.0, lag))
                feed.published_ms = 0

    async def _refresh_reads(self, feeds: list[Feed]) -> None:
        jobs, owners = [], []
        for feed in feeds:
            for key, watch in list(feed.pages.items()):
                jobs.append(self._refresh_page(feed, key, watch))
                owners.append(feed)
            if feed.mine:
                jobs.append(self._refresh_ranks(feed))
                owners.append(feed)
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for feed, result in zip(owners, results, strict=True):
            if isinstance(result, Exception):
                # Retried (once a second while the store is away): with no further change
                # to the board, nothing else would ever re-read it and the page stays stale.
                log.warning("live refresh failed", extra={"error": repr(result)})
                feed.refresh_due = True
                feed.refresh_after = time.monotonic() + self.refresh_retry_s

    async def _refresh_page(self, feed: Feed, key: PageKey, watch: PageWatch) -> None:
        self.page_reads += 1
        page = await self.reads.page(feed.game, feed.period, feed.start, key[0], key[1])
        state = (page.total, tuple((e.user_id, e.score) for e in page.entries))
        if state == watch.last:
            return
        watch.last = state
        texts: dict[str, str] = {}
        for session, shapes in list(watch.watchers.items()):
            for shape in shapes:
                text = texts.get(shape)
                if text is None:
                    text = texts[shape] = page_text(feed, watch.sub, key, page, shape)
                session.push(f"page:{watch.sub}:{shape}", text)

    async def _refresh_ranks(self, feed: Feed) -> None:
        user_ids = list(feed.mine)
        self.rank_batches += 1
        found = await self.reads.ranks(feed.board, user_ids)
        for uid in user_ids:
            state = found.get(uid)
            if state is None or feed.last_rank.get(uid) == state:
                continue
            feed.last_rank[uid] = state
            text = rank_text(feed, state)
            for session in list(feed.mine.get(uid, ())):
                session.push(f"rank:{feed.board}", text)


def _discard(index: dict[Any, set[Session]], key: Any, session: Session) -> None:
    sessions = index.get(key)
    if sessions is not None:
        sessions.discard(session)
        if not sessions:
            del index[key]
