"""Coalescing: fold many board changes into one net diff per board per tick."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from podium.protocol import BoardChange, Diff, Row, Snapshot, encode_text


class TopWindow:
    """The top of one board: as last pushed to this process's sockets, and as it is now.

    Board changes fold in as they arrive (each carries the complete top, so the
    newest one wins); `take_diff` turns everything since the last push into one
    net diff and makes it the pushed state.
    """

    def __init__(self, board: str, game: str, period: str, period_start: date) -> None:
        self.board = board
        self.game = game
        self.period = period
        self.period_start = period_start
        self.seq = -1
        self.current: list[tuple[int, int]] = []
        self.pushed_seq = -1
        self.pushed: list[Row] = []
        self._snapshot: str | None = None
        # What a top page needs beside (user, value), aligned with `current`: each row's
        # reached_seq and reached time (ms, 0 unknown), and the board's total (-1 unknown).
        self.reached: list[int] = []
        self.at: list[int] = []
        self.total = -1

    def reset(
        self,
        seq: int,
        rows: list[Row],
        total: int = -1,
        reached: list[int] | None = None,
        at: list[int] | None = None,
    ) -> None:
        """Replace both states with a fresh read of the board."""
        self.seq = self.pushed_seq = seq
        self.pushed = rows
        self.current = [(r.user_id, r.score) for r in rows]
        self._snapshot = None
        self._extras(total, reached or [], at or [])

    def _extras(self, total: int, reached: list[int], at: list[int]) -> None:
        if len(reached) == len(at) == len(self.current):
            self.reached, self.at, self.total = reached, at, total
        else:  # not told: the window serves no page until a change or read tells it
            self.reached, self.at, self.total = [], [], -1

    def fold(self, change: BoardChange) -> bool:
        """Take a change newer than what we hold; False if it is stale."""
        if change.seq <= self.seq:
            return False
        self.seq = change.seq
        if not change.resync:
            self.current = [(uid, value) for uid, value, _reached in change.top]
            self._extras(change.total, [r for _, _, r in change.top], change.at)
        return True

    def pending(self) -> bool:
        """Whether the top as it is now differs from the top last pushed."""
        if len(self.current) != len(self.pushed):
            return True
        return any(
            uid != row.user_id or value != row.score
            for (uid, value), row in zip(self.current, self.pushed, strict=True)
        )

    def rename(self, user_id: int, username: str) -> bool:
        """Put a changed display name on the pushed rows; False when the user is not here."""
        found = False
        for row in self.pushed:
            if row.user_id == user_id:
                row.username = username
                self._snapshot = None
                found = True
        return found

    def unnamed(self) -> set[int]:
        known = {row.user_id for row in self.pushed}
        return {uid for uid, _ in self.current if uid not in known}

    def take_diff(self, names: Mapping[int, str]) -> Diff | None:
        """The net change since the last push, now pushed; None when nothing changed."""
        if not self.pending():
            return None
        before = {row.user_id: row for row in self.pushed}
        rows: list[Row] = []
        upserts: list[Row] = []
        for index, (uid, value) in enumerate(self.current):
            old = before.get(uid)
            name = old.username if old is not None else names.get(uid, f"user{uid}")
            row = Row(rank=index + 1, user_id=uid, username=name, score=value)
            rows.append(row)
            if old is None or old.score != value or old.rank != row.rank:
                upserts.append(row)
        now = {uid for uid, _ in self.current}
        diff = Diff(
            board=self.board,
            seq=self.seq,
            prev_seq=self.pushed_seq,
            upserts=upserts,
            left=[row.user_id for row in self.pushed if row.user_id not in now],
        )
        self.pushed = rows
        self.pushed_seq = self.seq
        self._snapshot = None
        return diff

    def snapshot(self) -> Snapshot:
        return Snapshot(
            board=self.board,
            game=self.game,
            period=self.period,
            period_start=self.period_start,
            seq=self.pushed_seq,
            entries=self.pushed,
        )

    def snapshot_text(self) -> str:
        """The pushed state, encoded once per push however many sockets ask."""
        if self._snapshot is None:
            self._snapshot = encode_text(self.snapshot())
        return self._snapshot
