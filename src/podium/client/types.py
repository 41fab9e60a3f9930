"""The HTTP API's response shapes, as the client decodes them.

The WebSocket messages are `podium.protocol`'s Structs; the HTTP responses are built
by server modules the client must not import (boards, store, api), so their shapes
are restated here. Unknown fields are ignored: a newer server may add one without
breaking an older client. tests/test_client_types.py checks that each one still
matches the server's own Struct field for field.
"""

from __future__ import annotations

from datetime import date, datetime

import msgspec


class User(msgspec.Struct, kw_only=True):
    """An account (`/auth/register`, `/auth/me`)."""

    id: int
    username: str
    email: str
    role: str
    created_at: datetime


class TokenPair(msgspec.Struct, kw_only=True):
    """`/auth/login` and `/auth/refresh`: `expires_in` is the access token's life in s."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    user: User


class ScoreOut(msgspec.Struct, kw_only=True):
    """The answer to a score write; `duplicate` when its event id was seen before."""

    game: str
    user_id: int
    score: int
    delta: int
    rank: int | None
    previous_rank: int | None
    duplicate: bool


class Entry(msgspec.Struct, kw_only=True):
    rank: int
    user_id: int
    username: str
    score: int
    achieved_at: datetime | None


class Page(msgspec.Struct, kw_only=True):
    """A page of a board (top or around a user); `next_cursor` reads the next one."""

    game: str
    period: str
    period_start: date
    total: int
    entries: list[Entry]
    next_cursor: str | None
    # "live": from the answering instance's in-memory window, current to `as_of`;
    # "index": Redis; "database": PostgreSQL while the index is rebuilt.
    source: str = "index"
    as_of: datetime | None = None


class UserRank(msgspec.Struct, kw_only=True):
    """One user on one board; `rank`/`score` are None while the user is not on it."""

    game: str
    period: str
    period_start: date
    user_id: int
    rank: int | None
    score: int | None
    total: int
    percentile: float | None


class UserBoards(msgspec.Struct, kw_only=True):
    """Every board of one user (`/users/{id}/ranks`)."""

    user_id: int
    boards: list[UserRank]


class MemberRank(msgspec.Struct, kw_only=True):
    rank: int
    user_id: int
    username: str
    score: int
    global_rank: int


class MembersPage(msgspec.Struct, kw_only=True):
    """Ranks among a list of users; `missing` lists those not on the board."""

    game: str
    period: str
    period_start: date
    total: int
    entries: list[MemberRank]
    missing: list[int]


class ReportRow(msgspec.Struct, kw_only=True):
    rank: int
    user_id: int
    username: str
    score: int
    games_played: int
    games: int
    last_played_at: datetime


class Report(msgspec.Struct, kw_only=True):
    """The top players of [start, end) (`/reports/top`)."""

    game: str | None
    start: date
    end: date
    limit: int
    result: list[ReportRow]
    total_count: int


class Game(msgspec.Struct, kw_only=True):
    """A game and its rules (`signed`: writes need an HMAC signature)."""

    id: str
    name: str
    order: str
    operator: str
    policy: str
    min_score: int | None
    max_score: int | None
    max_delta: int | None
    delta_window_s: int
    created_at: datetime
    signed: bool


class GameList(msgspec.Struct, kw_only=True):
    games: list[Game]


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: object = None


class ErrorReply(msgspec.Struct, kw_only=True):
    """Every refusal: `{"error": {"code", "message", "details"}}`."""

    error: ErrorBody
