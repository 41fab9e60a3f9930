"""The hub's own logic, without sockets or stores: a fake `Reads`, the local broker."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from types import SimpleNamespace
from typing import Any

import msgspec

from podium.auth.denylist import Denylist
from podium.auth.tokens import Principal
from podium.boards.ranks import Entry, Page
from podium.clock import Clock
from podium.errors import WS_REVOKED, CloseCode
from podium.keys import Keys
from podium.protocol import BoardChange, Row, encode_board_change
from podium.realtime.broker import RESYNC, LocalBroker
from podium.realtime.hub import Hub
from podium.realtime.reads import RankState, TopRead
from podium.validation import Period

PREFIX = "hubtest:"


class FakeReads:
    """Boards held in memory; counts every read."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[int, int]]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.failing_pages = 0  # page reads that fail (a store outage) before one works

    async def top(self, board: str, game: str, period: Period, start: date, limit: int) -> TopRead:
        self.calls.append(("top", board))
        rows = self.rows.get(board, [])[:limit]
        return TopRead(
            5,
            [
                Row(rank=i + 1, user_id=u, username=f"n{u}", score=s)
                for i, (u, s) in enumerate(rows)
            ],
        )

    async def page(self, game: str, period: Period, start: date, offset: int, limit: int) -> Page:
        self.calls.append(("page", game, offset, limit))
        if self.failing_pages:
            self.failing_pages -= 1
            raise OSError("the store is away")
        return Page(game, period, start, 0, [Entry(1, 1, "n1", 9, None)], None)

    async def ranks(self, board: str, user_ids: list[int]) -> dict[int, RankState]:
        self.calls.append(("ranks", board, tuple(user_ids)))
        return {uid: (1, 9, 1) for uid in user_ids}

    async def names(self, user_ids: Iterable[int]) -> dict[int, str]:
        self.calls.append(("names", tuple(sorted(user_ids))))
        return {uid: f"n{uid}" for uid in user_ids}


class FakeSession:
    """What the hub calls on a session, recorded."""

    def __init__(self, family: str = "fam", user_id: int = 1) -> None:
        self.principal = Principal(kind="user", user_id=user_id, family=family)
        self.subjects = (family,)
        self.out: list[str] = []
        self.closed: list[CloseCode] = []

    def push(self, key: str, text: str, latest: Any = None, frame: bytes | None = None) -> bool:
        self.out.append(text)
        return True

    def resync(self, key: str, text: str) -> None:
        self.out.append(text)

    def reply(self, message: msgspec.Struct | str) -> None:
        self.out.append(
            message if isinstance(message, str) else msgspec.json.encode(message).decode()
        )

    def close_soon(self, code: CloseCode) -> None:
        self.closed.append(code)


def make_hub() -> tuple[Hub, LocalBroker, FakeReads]:
    services = SimpleNamespace(
        settings=SimpleNamespace(redis_prefix=PREFIX, tick_ms=1000, access_token_ttl=900),
        keys=Keys(PREFIX),
        clock=Clock(),
        denylist=Denylist(Keys(PREFIX), 1000),
    )
    broker, reads = LocalBroker(), FakeReads()
    # The boards are only reached through `reads`, which the test hands in.
    return Hub(services, SimpleNamespace(), broker, reads=reads), broker, reads


def change(hub: Hub, board: str, seq: int, *top: tuple[int, int]) -> tuple[str, bytes]:
    data = encode_board_change(BoardChange(board=board, seq=seq, top=[(u, s, seq) for u, s in top]))
    return hub.keys.channel(board), data


async def test_first_watcher_subscribes_the_channel_and_the_last_leaves_it() -> None:
    hub, broker, reads = make_hub()
    first = await hub.acquire("g", "all")
    second = await hub.acquire("g", "all")
    assert first is second
    assert broker.channels == {hub.keys.channel(first.board)}
    assert reads.calls == [("top", first.board)]  # one read, however many watchers
    await hub.release(first)
    assert broker.channels == {hub.keys.channel(first.board)}
    await hub.release(second)
    assert broker.channels == set()
    assert hub.feeds == {}


async def test_changes_fold_into_one_push_per_board_per_tick_the_same_text_for_all() -> None:
    hub, _, reads = make_hub()
    feed = await hub.acquire("g", "all")
    a, b = FakeSession(), FakeSession()
    for s in (a, b):
        hub.watch_top(feed, s, None)  # type: ignore[arg-type]
    snapshot = a.out.pop()
    assert b.out.pop() == snapshot
    hub.deliver(change(hub, feed.board, 6, (3, 30)))
    hub.deliver(change(hub, feed.board, 7, (3, 30), (4, 20)))
    hub.deliver(change(hub, feed.board, 6, (9, 99)))  # stale: ignored
    await hub.tick()
    assert len(a.out) == 1 and a.out == b.out
    diff = msgspec.json.decode(a.out[0])
    assert (diff["type"], diff["seq"], diff["prev_seq"]) == ("diff", 7, 5)
    assert [r["user_id"] for r in diff["upserts"]] == [3, 4]
    assert ("names", (3, 4)) in reads.calls
    await hub.tick()  # nothing new: nothing pushed
    assert len(a.out) == 1
    assert hub.pushes == 1


async def test_one_read_per_distinct_page_per_tick() -> None:
    hub, _, reads = make_hub()
    feed = await hub.acquire("g", "all")
    sessions = [FakeSession() for _ in range(3)]
    for s in sessions:
        hub.watch_page(feed, s, (0, 10), "typed")  # type: ignore[arg-type]
    hub.watch_page(feed, sessions[0], (10, 10), "typed")  # type: ignore[arg-type]
    hub.deliver(change(hub, feed.board, 6, (1, 9)))
    await hub.tick()
    await hub.refreshed()
    pages = [c for c in reads.calls if c[0] == "page"]
    assert sorted(pages) == [("page", "g", 0, 10), ("page", "g", 10, 10)]
    assert hub.page_reads == 2
    assert [len(s.out) for s in sessions] == [2, 1, 1]
    # The same page again, unchanged: read, but not pushed again.
    hub.deliver(change(hub, feed.board, 7, (1, 10)))
    await hub.tick()
    await hub.refreshed()
    assert hub.page_reads == 4
    assert [len(s.out) for s in sessions] == [2, 1, 1]


async def test_a_failed_page_read_is_retried_without_another_change() -> None:
    hub, _, reads = make_hub()
    hub.refresh_retry_s = 0  # the retry delay is a second in production
    feed = await hub.acquire("g", "all")
    watcher = FakeSession()
    hub.watch_page(feed, watcher, (0, 10), "typed")  # type: ignore[arg-type]
    reads.failing_pages = 1
    hub.deliver(change(hub, feed.board, 6, (1, 9)))
    await hub.tick()
    await hub.refreshed()
    assert watcher.out == []  # the store was away: nothing to push yet
    await hub.tick()  # no new change arrives; the failed read alone brings it back
    await hub.refreshed()
    assert [c for c in reads.calls if c[0] == "page"] == [("page", "g", 0, 10)] * 2
    assert len(watcher.out) == 1


async def test_unwatching_the_last_page_watcher_forgets_the_page() -> None:
    hub, _, _ = make_hub()
    feed = await hub.acquire("g", "all")
    a, b = FakeSession(), FakeSession()
    hub.watch_page(feed, a, (0, 10), "typed")  # type: ignore[arg-type]
    hub.watch_page(feed, b, (0, 10), "seed")  # type: ignore[arg-type]
    hub.unwatch_page(feed, a, (0, 10), "typed")  # type: ignore[arg-type]
    assert set(feed.pages[(0, 10)].watchers) == {b}
    hub.unwatch_page(feed, b, (0, 10), "seed")  # type: ignore[arg-type]
    assert feed.pages == {}


async def test_my_score_ranks_are_one_batch_per_board() -> None:
    hub, _, reads = make_hub()
    feed = await hub.acquire("g", "all")
    for uid in (1, 2, 3):
        await hub.watch_rank(feed, FakeSession(user_id=uid), uid)  # type: ignore[arg-type]
    reads.calls.clear()
    hub.deliver(change(hub, feed.board, 6, (1, 9)))
    await hub.tick()
    await hub.refreshed()
    assert [c for c in reads.calls if c[0] == "ranks"] == [("ranks", feed.board, (1, 2, 3))]
    assert hub.rank_batches == 1


async def test_a_revocation_closes_the_sockets_of_that_family_only() -> None:
    hub, _, _ = make_hub()
    mine, other = FakeSession("fam-a"), FakeSession("fam-b", user_id=2)
    hub.register(mine)  # type: ignore[arg-type]
    hub.register(other)  # type: ignore[arg-type]
    assert hub.sockets_of(1) == 1
    hub.deliver((hub.services.keys.revocations, b"fam-a"))
    assert (mine.closed, other.closed) == ([WS_REVOKED], [])
    hub.unregister(mine)  # type: ignore[arg-type]
    assert hub.sockets_of(1) == 0
    assert hub.recent_revocations.since(("fam-a",), 0.0)


async def test_a_resync_rereads_every_loaded_board_once() -> None:
    hub, broker, reads = make_hub()
    feed = await hub.acquire("g", "all")
    watcher = FakeSession()
    hub.watch_top(feed, watcher, None)  # type: ignore[arg-type]
    reads.calls.clear()
    broker.generation += 1  # the broker reconnected
    hub.deliver(RESYNC)
    await hub.tick()
    assert reads.calls == [("top", feed.board)]
    assert len(watcher.out) == 2  # the first snapshot, then the re-read one
    await hub.tick()
    assert reads.calls == [("top", feed.board)]


async def test_a_board_change_of_an_unwatched_board_is_ignored() -> None:
    hub, _, reads = make_hub()
    hub.deliver(change(hub, "g:all:0", 9, (1, 1)))
    await hub.tick()
    assert reads.calls == []


async def test_after_reauth_the_session_belongs_to_the_new_family() -> None:
    hub, _, _ = make_hub()
    session = FakeSession("fam-old")
    hub.register(session)  # type: ignore[arg-type]
    old = session.principal
    session.principal = msgspec.structs.replace(old, family="fam-new")
    hub.rebind(session, old)  # type: ignore[arg-type]
    hub.revoke("fam-old")
    assert session.closed == []
    hub.revoke("fam-new")
    assert session.closed == [WS_REVOKED]
