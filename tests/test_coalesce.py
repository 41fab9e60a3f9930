"""TopWindow, the pure core of the tick: changes fold in, one net diff per push."""

from __future__ import annotations

from datetime import date

import msgspec

from podium.protocol import BoardChange, Row
from podium.realtime.coalesce import TopWindow
from podium.realtime.live import live_top

NAMES = {1: "ann", 2: "bob", 3: "cy", 4: "dee"}


def window() -> TopWindow:
    top = TopWindow("g:all:0", "g", "all", date(2026, 1, 1))
    top.reset(
        10,
        [
            Row(rank=1, user_id=1, username="ann", score=50),
            Row(rank=2, user_id=2, username="bob", score=40),
        ],
    )
    return top


def change(seq: int, *top: tuple[int, int]) -> BoardChange:
    return BoardChange(board="g:all:0", seq=seq, top=[(uid, v, seq) for uid, v in top])


def test_nothing_changed_no_diff() -> None:
    top = window()
    assert not top.pending()
    assert top.take_diff(NAMES) is None


def test_stale_changes_are_refused() -> None:
    top = window()
    assert not top.fold(change(10, (3, 99)))
    assert not top.fold(change(9, (3, 99)))
    assert not top.pending()


def test_many_changes_fold_into_one_net_diff() -> None:
    top = window()
    assert top.fold(change(11, (3, 60), (1, 50), (2, 40)))  # cy enters first
    assert top.fold(change(12, (3, 60), (2, 55), (1, 50)))  # bob passes ann
    assert top.unnamed() == {3}
    diff = top.take_diff(NAMES)
    assert diff is not None
    assert (diff.seq, diff.prev_seq, diff.left) == (12, 10, [])
    assert [(r.rank, r.user_id, r.username, r.score) for r in diff.upserts] == [
        (1, 3, "cy", 60),  # entered
        (2, 2, "bob", 55),  # moved and scored
        (3, 1, "ann", 50),  # moved
    ]
    # The diff is the pushed state now: nothing more to push.
    assert top.pushed_seq == 12
    assert top.take_diff(NAMES) is None


def test_leaving_the_top_and_a_net_zero_change() -> None:
    top = window()
    top.fold(change(11, (1, 50), (4, 45)))  # bob left, dee entered
    top.fold(change(12, (1, 50), (2, 40)))  # and back: no net change
    assert not top.pending()
    assert top.take_diff(NAMES) is None
    top.fold(change(13, (1, 50)))
    diff = top.take_diff(NAMES)
    assert diff is not None
    assert (diff.upserts, diff.left, diff.prev_seq) == ([], [2], 10)


def test_a_resync_change_moves_seq_but_keeps_the_top() -> None:
    top = window()
    resync = msgspec.structs.replace(change(11), resync=True)
    assert top.fold(resync)
    assert top.seq == 11
    assert not top.pending()


def test_the_snapshot_text_is_encoded_once_per_push() -> None:
    top = window()
    first = top.snapshot_text()
    assert top.snapshot_text() is first
    assert top.snapshot().seq == 10
    top.fold(change(11, (1, 70), (2, 40)))
    top.take_diff(NAMES)
    again = top.snapshot_text()
    assert again is not first
    assert top.snapshot().entries[0].score == 70


def test_unknown_names_fall_back_to_the_user_id() -> None:
    top = window()
    top.fold(change(11, (1, 50), (2, 40), (9, 1)))
    diff = top.take_diff({})
    assert diff is not None
    assert diff.upserts[-1].username == "user9"


def test_a_live_top_needs_every_time_and_the_total() -> None:
    top = window()
    assert live_top(top) is None  # a read that told no total or times (PostgreSQL's)
    full = msgspec.structs.replace(change(11, (1, 50), (2, 40)), at=[5, 6], total=7)
    top.fold(full)
    top.take_diff(NAMES)
    live = live_top(top)
    assert live is not None and live.total == 7 and live.seq == 11
    assert [(r.user_id, r.username, r.score, r.reached_ms) for r in live.rows] == [
        (1, "ann", 50, 5),
        (2, "bob", 40, 6),
    ]
    # A change that does not say (an older instance's apply.lua): no page from memory.
    top.fold(change(12, (1, 50), (2, 41)))
    top.take_diff(NAMES)
    assert live_top(top) is None
    # A time the index does not hold (0) is not one a page may show.
    top.fold(msgspec.structs.replace(change(13, (1, 50), (2, 42)), at=[5, 0], total=7))
    top.take_diff(NAMES)
    assert live_top(top) is None


def test_a_rename_reaches_the_pushed_rows_and_the_snapshot() -> None:
    top = window()
    first = top.snapshot_text()
    assert top.rename(2, "robert")
    assert not top.rename(9, "nobody")
    assert top.snapshot_text() is not first
    assert [r.username for r in top.snapshot().entries] == ["ann", "robert"]
    assert not top.pending()  # a name alone is no push
