"""What each WebSocket endpoint does with an open socket: one Channel per endpoint.

`api/ws.py` authenticates and accepts; a Channel validates its handshake query
(`prepare`), sends the first messages (`opened`), handles each client message
(`handle`) and gives back what it took (`release`). See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, timedelta
from typing import Annotated, Any

import msgspec
from starlette.websockets import WebSocket

from podium.api.responses import read_query
from podium.api.spec import Param
from podium.auth.tokens import Principal
from podium.errors import (
    ApiError,
    bad_request,
    forbidden,
    invalid,
)
from podium.protocol import (
    Ack,
    Error,
    ReportMsg,
    ReportRequest,
    SeedPageRequest,
    SeedReport,
    SeedReportRequest,
    SeedReportRow,
    SubmitScore,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
)
from podium.realtime.feeds import Feed, PageKey
from podium.realtime.hub import Hub
from podium.realtime.session import Session, error_of
from podium.validation import (
    INT64_MAX,
    MAX_OFFSET,
    MAX_PAGE_LIMIT,
    PageLimit,
    PageOffset,
    Period,
    Slug,
)

Seq = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]

log = logging.getLogger("podium.ws")


# Handshake queries, parsed as the HTTP reads parse theirs (one shape per parameter):
# a value out of shape refuses the handshake with 422 before any hub or cache sees it.
FEED_QUERY = {
    "game": Param(Slug, "a game id, or `global`", required=True),
    "period": Param(Period, "all (default), day, week or month", default="all"),
}
SINCE_QUERY = {**FEED_QUERY, "since": Param(Seq, "the last seq the client holds")}
PAGE_QUERY = {
    "game": Param(Slug, "a game id, or `global`"),
    "period": Param(Period, "all (default), day, week or month", default="all"),
    "offset": Param(PageOffset, "rows to skip", default=0),
    "limit": Param(PageLimit, "rows, 1..200", default=10),
}


def read_feed_query(ws: WebSocket, params: dict[str, Param]) -> dict[str, Any]:
    """The handshake's board: a missing game is 400 (docs/protocol.md), a bad value 422."""
    if not ws.query_params.get("game"):
        raise bad_request("query parameter game is required", {"game": "required"})
    return read_query(ws, params)


# -- per-channel handlers ---------------------------------------------------------------


class Channel:
    """What one endpoint does with an open socket. Subclasses override the hooks."""

    seed: type[SeedPageRequest] | type[SeedReportRequest] | None = None

    def rate(self) -> float:
        """Inbound messages per second this socket may send."""
        return self.hub.limits.messages_per_second

    def __init__(self, hub: Hub, ws: WebSocket, principal: Principal) -> None:
        self.hub = hub
        self.services = hub.services
        self.boards = hub.boards
        self.ws = ws
        self.principal = principal

    async def prepare(self) -> None:
        """Validate the query and take what the socket needs; raise ApiError to refuse."""

    async def opened(self, session: Session) -> None:
        """Right after accept: the first messages."""

    async def handle(self, request: Any) -> None:
        raise bad_request(f"{type(request).__name__.lower()} is not used on this endpoint")

    async def release(self, session: Session) -> None:
        """Teardown: give back whatever prepare and handle took."""


class Scoreboard(Channel):
    async def prepare(self) -> None:
        q = read_feed_query(self.ws, SINCE_QUERY)
        self.since = q["since"]
        self.feed = await self.hub.acquire(q["game"], q["period"])

    async def opened(self, session: Session) -> None:
        self.hub.watch_top(self.feed, session, self.since)

    async def release(self, session: Session) -> None:
        self.hub.unwatch_top(self.feed, session)
        await self.hub.release(self.feed)


class Scores(Channel):
    seed = SeedPageRequest

    def __init__(self, hub: Hub, ws: WebSocket, principal: Principal) -> None:
        super().__init__(hub, ws, principal)
        # (game, period, offset, limit, shape) -> feed
        self.subs: dict[tuple[str, str, int, int, str], Feed] = {}
        self.seed_sub: tuple[str, str, int, int, str] | None = None
        self.session: Session | None = None

    async def prepare(self) -> None:
        q = read_query(self.ws, PAGE_QUERY)
        self.initial: Subscribe | None = None
        if q["game"] is not None:
            self.initial = Subscribe(
                game=q["game"], period=q["period"], offset=q["offset"], limit=q["limit"]
            )

    async def opened(self, session: Session) -> None:
        self.session = session
        if self.initial is not None:
            await self.handle(self.initial)

    async def handle(self, request: Any) -> None:
        assert self.session is not None
        match request:
            case Subscribe(game=game, period=period, offset=offset, limit=limit):
                await self._subscribe(game, period, offset, limit, "typed")
            case Unsubscribe(game=game, period=period, offset=offset, limit=limit):
                key = (game, period, offset, limit, "typed")
                feed = self.subs.pop(key, None)
                if feed is None:
                    raise ApiError(404, "not_subscribed", "no such subscription")
                self.hub.unwatch_page(feed, self.session, (offset, limit), "typed")
                await self.hub.release(feed)
                self.session.reply(Unsubscribed(sub=f"{game}:{period}:{offset}:{limit}"))
            case SeedPageRequest(start=start, end=end, channel=channel, game=game):
                name = game or channel
                if not name:
                    raise invalid("give channel or game", {"channel": "a game id, or all"})
                if start < 0 or end < start:
                    raise invalid("need 0 <= start <= end", {"end": "inclusive index"})
                # Seed 001 pages through one view: a new request replaces the last one.
                if self.seed_sub is not None:
                    await self._unsubscribe(self.seed_sub)
                    self.seed_sub = None
                board = "global" if name == "all" else name
                self.seed_sub = await self._subscribe(
                    board, "all", start, min(end - start + 1, MAX_PAGE_LIMIT), "seed"
                )
            case _:
                await super().handle(request)

    async def _subscribe(
        self, game: str, period: str, offset: int, limit: int, shape: str
    ) -> tuple[str, str, int, int, str]:
        assert self.session is not None
        _check_page(offset, limit)
        key = (game, period, offset, limit, shape)
        page: PageKey = (offset, limit)
        feed = self.subs.get(key)
        if feed is None:
            if not self.session.core.admit_subscription(len(self.subs)):
                raise ApiError(
                    429,
                    "too_many_subscriptions",
                    f"at most {self.hub.limits.max_subscriptions} subscriptions per socket",
                )
            feed = await self.hub.acquire(game, period)
            self.subs[key] = feed
        sub = self.hub.watch_page(feed, self.session, page, shape)
        if shape == "typed":
            self.session.reply(
                Subscribed(sub=sub, game=game, period=feed.period, offset=offset, limit=limit)
            )
        await self.hub.send_page(feed, self.session, page, shape)
        return key

    async def _unsubscribe(self, key: tuple[str, str, int, int, str]) -> None:
        feed = self.subs.pop(key, None)
        if feed is not None and self.session is not None:
            self.hub.unwatch_page(feed, self.session, (key[2], key[3]), key[4])
            await self.hub.release(feed)

    async def release(self, session: Session) -> None:
        for key in list(self.subs):
            await self._unsubscribe(key)


def _check_page(offset: int, limit: int) -> None:
    if not 0 <= offset <= MAX_OFFSET or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise invalid(
            "page out of range", {"offset": f"0..{MAX_OFFSET}", "limit": f"1..{MAX_PAGE_LIMIT}"}
        )


class MyScore(Channel):
    async def prepare(self) -> None:
        if self.principal.user_id is None:
            raise forbidden("my-score needs a user token")
        q = read_feed_query(self.ws, FEED_QUERY)
        self.feed = await self.hub.acquire(q["game"], q["period"])

    async def opened(self, session: Session) -> None:
        assert self.principal.user_id is not None
        await self.hub.watch_rank(self.feed, session, self.principal.user_id)

    async def release(self, session: Session) -> None:
        assert self.principal.user_id is not None
        self.hub.unwatch_rank(self.feed, session, self.principal.user_id)
        await self.hub.release(self.feed)


class AddScore(Channel):
    def rate(self) -> float:
        # Writes have their own per-user limit in the write path; services write for
        # many users at once and are trusted with more.
        per_user = float(self.services.settings.writes_per_second_per_user)
        if self.principal.kind == "service":
            per_user *= 100
        return max(self.hub.limits.messages_per_second, per_user)

    def __init__(self, hub: Hub, ws: WebSocket, principal: Principal) -> None:
        super().__init__(hub, ws, principal)
        self.inflight = asyncio.Semaphore(hub.limits.max_inflight_writes)
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: Session

    async def handle(self, request: Any) -> None:
        if not isinstance(request, SubmitScore):
            await super().handle(request)
            return
        # Several writes in flight per socket: acks come back as each one commits,
        # matched by event_id. The semaphore stops reading when too many are pending.
        await self.inflight.acquire()
        task = asyncio.create_task(self._write(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _write(self, request: SubmitScore) -> None:
        from podium.api.scores import score_in
        from podium.boards.submit import submit_score

        session = self.session
        try:
            body = score_in(request)
            client = self.ws.client.host if self.ws.client else "unknown"
            out = await submit_score(self.services, self.boards, session.principal, body, client)
            session.reply(
                Ack(
                    event_id=request.event_id,
                    score=out.score,
                    delta=out.delta,
                    rank=out.rank,
                    duplicate=out.duplicate,
                )
            )
        except ApiError as exc:
            session.reply(error_of(exc, request.event_id))
        except Exception:
            log.exception("websocket score write failed")
            session.reply(
                Error(code="internal", message="internal server error", event_id=request.event_id)
            )
        finally:
            self.inflight.release()

    async def opened(self, session: Session) -> None:
        self.session = session


class Reports(Channel):
    seed = SeedReportRequest

    def __init__(self, hub: Hub, ws: WebSocket, principal: Principal) -> None:
        super().__init__(hub, ws, principal)
        self.session: Session | None = None

    async def opened(self, session: Session) -> None:
        self.session = session

    async def handle(self, request: Any) -> None:
        from podium.boards.top_report import top_report

        assert self.session is not None
        match request:
            case ReportRequest(start=start, end=end, limit=limit, game=game):
                report = await top_report(
                    self.services,
                    self.boards,
                    self.principal,
                    self._client(),
                    start,
                    end,
                    limit,
                    game,
                )
                self.session.reply(
                    ReportMsg(
                        start=report.start,
                        end=report.end,
                        limit=report.limit,
                        game=report.game,
                        result=report.result,
                        total_count=report.total_count,
                    )
                )
            case SeedReportRequest(start=start, end=end, limit=limit):
                # Seed 001's end is a day of the range (inclusive); ours is exclusive.
                first = _seed_date("start", start)
                last = _seed_date("end", end)
                report = await top_report(
                    self.services,
                    self.boards,
                    self.principal,
                    self._client(),
                    first,
                    last + timedelta(days=1),
                    limit,
                )
                self.session.reply(
                    SeedReport(
                        result=[
                            SeedReportRow(
                                name=row.username,
                                score=row.score,
                                games=row.games,
                                game=report.game or "all",
                                date=row.last_played_at.date(),
                            )
                            for row in report.result
                        ]
                    )
                )
            case _:
                await super().handle(request)

    def _client(self) -> str | None:
        return self.ws.client.host if self.ws.client else None


def _seed_date(name: str, raw: str) -> date:
    try:
        if len(raw) > 10:
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).date()
        return date.fromisoformat(raw)
    except ValueError:
        raise invalid(f"{name} must be an ISO date", {name: "YYYY-MM-DD"}) from None


# -- the ASGI endpoint ---------------------------------------------------------------------
