"""Every message on the wire, as msgspec Structs: pub/sub between instances and
WebSocket messages to and from clients. Decoders and encoders are built once here.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, cast

import msgspec

from podium.validation import (
    MAX_OFFSET,
    MAX_PAGE_LIMIT,
    TEXT_PATTERN,
    ActionName,
    HexSignature,
    PageLimit,
    PageOffset,
    Period,
    ReportLimit,
    Score,
    Slug,
    UserId,
    exactly_one,
)


class BoardChange(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Published on a board's channel once per applied batch that changed the board.

    `top` is the complete top 10 after the change as [user_id, value, reached_seq];
    `entered`/`left`/`moved` compare it with the top 10 before; `changed` lists every
    user whose value changed. `at` is the time each top row's value was reached (ms
    since the epoch, 0 when the index does not hold it) and `total` the board's member
    count after the change (-1: not told), so a hub can serve the top page from memory.
    `resync` asks subscribers to re-read the board.
    """

    board: str
    seq: int
    top: list[tuple[int, int, int]] = []
    entered: list[int] = []
    left: list[int] = []
    moved: list[int] = []
    changed: list[int] = []
    at: list[int] = []
    total: int = -1
    resync: bool = False
    ts: int = 0  # publish time, ms since the epoch (Redis clock)


board_change_decoder = msgspec.json.Decoder(BoardChange)


class NameChange(msgspec.Struct, kw_only=True):
    """Published on the renames channel when a user's display name changed: every hub
    puts it on the windows it holds, so pages from memory show it at once."""

    user_id: int
    username: str


name_change_decoder = msgspec.json.Decoder(NameChange)
_board_change_encoder = msgspec.json.Encoder()


def encode_board_change(change: BoardChange) -> bytes:
    """A BoardChange as published on a board's channel: the one Python encoding of it.

    apply.lua and swap.lua build the same JSON in Redis (tests/test_keys.py decodes
    theirs with unknown fields forbidden)."""
    return _board_change_encoder.encode(change)


# --- WebSocket messages -------------------------------------------------------------
# Every client and server message is a Struct tagged by its "type" field. Seed 001's
# untagged request shapes ({channel|game, start, end} and {start, end, limit}) are
# decoded by `decode_client` when a message has no "type". Every field a client sends
# has its shape here (docs/protocol.md lists them): a value outside it fails that one
# message with an `error`, before any feed, cache or store sees it.

# An access token or a service credential; real ones are well under 1 KiB.
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
# The write path checks that it is a UUID and names it in the error; here only its size.
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=TEXT_PATTERN)]
# Unix seconds, up to the last second of year 9999.
UnixSeconds = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799)]
# Seed 001's inclusive indices: the page they span is clipped to MAX_PAGE_LIMIT rows.
SeedIndex = Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET + MAX_PAGE_LIMIT)]
# Seed 001's report bounds: an ISO date or datetime.
SeedWhen = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=TEXT_PATTERN)]


class ScoreFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields of a score write, over HTTP (ScoreIn) and WebSocket (SubmitScore):
    `score` or `action` (with optional `ts`/`signature` for signed actions); `user_id`
    for service credentials. The decoder refuses any value out of shape (an empty
    `action` is out of shape, not "absent"), before any cache or store sees it."""

    game: Slug
    score: Score | None = None
    action: ActionName | None = None
    user_id: UserId | None = None
    ts: UnixSeconds | None = None
    signature: HexSignature | None = None

    # Stated in the OpenAPI document (ops/openapi.py merges it into the component).
    __json_schema_extra__: ClassVar[dict[str, object]] = exactly_one(
        {"score": "integer", "action": "string"}
    )


class ScoreIn(ScoreFields):
    """The body of `POST /api/v1/scores`."""

    event_id: uuid.UUID


class Msg(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """Base of every tagged WebSocket message."""


# Client -> server


class Auth(Msg, tag="auth"):
    """A fresh access token for an open socket, sent before the current one expires."""

    token: Token


class Ping(Msg, tag="ping"):
    pass


class Subscribe(Msg, tag="subscribe"):
    game: Slug
    period: Period = "all"
    offset: PageOffset = 0
    limit: PageLimit = 10


class Unsubscribe(Msg, tag="unsubscribe"):
    game: Slug
    period: Period = "all"
    offset: PageOffset = 0
    limit: PageLimit = 10


class SubmitScore(Msg, ScoreFields, tag="score"):
    """A score write, as `POST /api/v1/scores` (ScoreIn)."""

    # Any short text here, so that a frame whose id is no UUID is still answered with
    # an error naming it; the write path then checks it as ScoreIn does (api/scores.py).
    event_id: EventId


class ReportRequest(Msg, tag="report"):
    start: date
    end: date
    limit: ReportLimit = 10
    game: Slug | None = None


ClientMessage = Auth | Ping | Subscribe | Unsubscribe | SubmitScore | ReportRequest


class SeedPageRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Seed 001's `/scores` request: inclusive indices into a board."""

    start: SeedIndex
    end: SeedIndex
    channel: Slug | None = None
    game: Slug | None = None


class SeedReportRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Seed 001's `/reports` request: ISO dates or datetimes."""

    start: SeedWhen
    end: SeedWhen
    limit: ReportLimit = 10


# Server -> client


class Row(msgspec.Struct, kw_only=True):
    rank: int
    user_id: int
    username: str
    score: int


class PageRow(msgspec.Struct, kw_only=True):
    rank: int
    user_id: int
    username: str
    score: int
    achieved_at: datetime | None


class Snapshot(Msg, tag="snapshot"):
    """The whole top of a board at `seq`; replaces whatever the client held."""

    board: str
    game: str
    period: str
    period_start: date
    seq: int
    entries: list[Row]


class Diff(Msg, tag="diff"):
    """The net change from `prev_seq` to `seq`; apply it only when holding `prev_seq`.

    `upserts` are the entries that are new or whose rank or score changed; `left`
    are the user ids no longer in the top. Merge by user id, drop `left`, sort by rank.
    """

    board: str
    seq: int
    prev_seq: int
    upserts: list[Row]
    left: list[int]


class Synced(Msg, tag="synced"):
    """Answer to `?since=` when the client missed nothing."""

    board: str
    seq: int


class Subscribed(Msg, tag="subscribed"):
    sub: str
    game: str
    period: str
    offset: int
    limit: int


class Unsubscribed(Msg, tag="unsubscribed"):
    sub: str


class PageMsg(Msg, tag="page"):
    """A live page of a board; each one replaces the last for its `sub`."""

    sub: str
    board: str
    game: str
    period: str
    period_start: date
    seq: int
    offset: int
    limit: int
    total: int
    entries: list[PageRow]


class RankMsg(Msg, tag="rank"):
    game: str
    period: str
    rank: int | None
    score: int | None
    total: int


class Ack(Msg, tag="ack"):
    event_id: str
    score: int
    delta: int
    rank: int | None
    duplicate: bool


class ReportMsg(Msg, tag="report"):
    """The top players of [start, end) (UTC dates, end exclusive), as over HTTP."""

    start: date
    end: date
    limit: int
    game: str | None
    result: list[Any]
    total_count: int


class Error(Msg, tag="error", omit_defaults=True):
    code: str
    message: str
    event_id: str | None = None
    details: Any = None


class Pong(Msg, tag="pong"):
    pass


class Authed(Msg, tag="authed"):
    exp: int


ServerMessage = (
    Snapshot
    | Diff
    | Synced
    | Subscribed
    | Unsubscribed
    | PageMsg
    | RankMsg
    | Ack
    | ReportMsg
    | Error
    | Pong
    | Authed
)


class SeedRow(msgspec.Struct, kw_only=True):
    rank: int
    user_id: int
    player: str
    score: int
    date: date


class SeedPage(msgspec.Struct, kw_only=True):
    """Seed 001's answer shape for `/scores`."""

    result: list[SeedRow]
    total_count: int


class SeedReportRow(msgspec.Struct, kw_only=True):
    name: str
    score: int
    games: int
    game: str
    date: date


class SeedReport(msgspec.Struct, kw_only=True):
    """Seed 001's answer shape for `/reports`."""

    result: list[SeedReportRow]


client_decoder = msgspec.json.Decoder(ClientMessage)
encoder = msgspec.json.Encoder()
_MISSING_TAG = "Object missing required field `type`"


class BadMessage(Exception):
    """A client message that cannot be used; `code` and text are safe to send back.

    `event_id` is the frame's own id when that much of it is well-formed, so a client can
    tell which of its writes was refused.
    """

    def __init__(self, code: str, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event_id = event_id


class _EventIdOnly(msgspec.Struct):
    event_id: EventId | None = None


_event_id_decoder = msgspec.json.Decoder(_EventIdOnly)


def _event_id_of(data: bytes | str) -> str | None:
    try:
        return _event_id_decoder.decode(data).event_id
    except (msgspec.DecodeError, RecursionError):
        return None


def decode_client(
    data: bytes | str, seed: type[SeedPageRequest] | type[SeedReportRequest] | None = None
) -> ClientMessage | SeedPageRequest | SeedReportRequest:
    """Decode one client frame; untagged objects are tried as the endpoint's seed shape."""
    try:
        return cast(ClientMessage, client_decoder.decode(data))
    except msgspec.ValidationError as exc:
        text = str(exc)
        if seed is None or not text.startswith(_MISSING_TAG):
            if text.startswith("Invalid value") and "$.type" in text:
                raise BadMessage("unknown_type", "unknown message type") from None
            raise BadMessage("invalid", _clip(text), _event_id_of(data)) from None
    except msgspec.DecodeError:
        raise BadMessage("bad_json", "message is not valid JSON") from None
    except RecursionError:
        # msgspec recurses per nesting level: a frame under the size limit can nest deeper.
        raise BadMessage("bad_json", "message nests too deeply") from None
    try:
        return msgspec.json.decode(data, type=seed)
    except msgspec.ValidationError as exc:
        raise BadMessage("invalid", _clip(str(exc))) from None
    except RecursionError:
        raise BadMessage("bad_json", "message nests too deeply") from None


def _clip(text: str, most: int = 300) -> str:
    # msgspec quotes a bad enum value in its message: never echo a huge one back.
    return text if len(text) <= most else text[: most - 3] + "..."


def encode_text(message: msgspec.Struct) -> str:
    """Encode once for every socket that gets this message (WebSocket text frame)."""
    return encoder.encode(message).decode()
