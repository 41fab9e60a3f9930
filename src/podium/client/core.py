"""`AsyncClient`: Podium's HTTP API with automatic refresh and safe retries.

One credential per client: an access token (with its refresh token, refreshed on a
401), a username and password (logged in on first use, again when the refresh token
is spent), or a service credential (`psk_...`, never refreshed). Score writes carry
an event id made here, so a retry after a timeout, a dropped connection or a 503 is
applied once by the server; a 429 is waited out as its Retry-After says.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any, Literal, TypeVar

import httpx
import msgspec

from podium.client import live
from podium.client.backoff import Backoff
from podium.client.errors import AuthError, Unavailable
from podium.client.replies import decode_reply, error_of, segment
from podium.client.types import (
    Game,
    GameList,
    MembersPage,
    Page,
    Report,
    ScoreOut,
    TokenPair,
    User,
    UserBoards,
    UserRank,
)
from podium.protocol import ScoreIn
from podium.validation import Period

T = TypeVar("T")

Ranking = Literal["ordinal", "competition"]


class AsyncClient:
    """Podium over HTTP and WebSocket, for game servers, tools and tests.

    `AsyncClient(url, token=..., refresh_token=...)`, `AsyncClient(url, username=...,
    password=...)` or `AsyncClient(url, service_token="psk_...")`; with none of them
    only `register` and `login` work until `login` is called.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        refresh_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        service_token: str | None = None,
        timeout: float = 10.0,
        retries: int = 5,
        max_failures: int | None = None,
        backoff: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        given = [token is not None, username is not None, service_token is not None]
        if sum(given) > 1:
            raise ValueError("give one of token, username/password or service_token")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        # Consecutive failed reconnects of a subscription before Unavailable (None: forever).
        self.max_failures = max_failures
        self.backoff = backoff or Backoff()
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/api/v1", timeout=timeout, transport=transport
        )
        self._access = token if token is not None else service_token
        self._refresh = refresh_token
        self._login = (username, password) if username is not None and password else None
        self._renewing = asyncio.Lock()
        self._subscriptions: set[live.Subscription[Any]] = set()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every live subscription of this client, then the HTTP connections."""
        for sub in list(self._subscriptions):
            await sub.aclose()
        await self._http.aclose()

    @property
    def access_token(self) -> str | None:
        return self._access

    @property
    def refresh_token(self) -> str | None:
        return self._refresh

    # --- credentials ------------------------------------------------------------------

    async def token(self) -> str:
        """The access token (or service credential) to send, logging in if need be."""
        if self._access is None and self._login is not None:
            await self.login(*self._login)
        if self._access is None:
            raise AuthError(401, "unauthorized", "no credential: log in first")
        return self._access

    async def renew(self, used: str) -> None:
        """After `used` was refused: refresh (or log in again) once, however many
        requests saw the refusal together; AuthError when nothing can renew it."""
        async with self._renewing:
            if self._access != used:
                return  # another request renewed it meanwhile
            if self._refresh is not None:
                try:
                    await self.refresh()
                    return
                except AuthError:
                    if self._login is None:
                        raise
            if self._login is None:
                raise AuthError(401, "unauthorized", "the token was refused and cannot be renewed")
            await self.login(*self._login)

    async def register(self, username: str, email: str, password: str) -> User:
        """Create an account (log in with `login` afterwards)."""
        body = {"username": username, "email": email, "password": password}
        return await self._call("POST", "/auth/register", User, body=body, auth=False)

    async def login(self, username: str, password: str) -> TokenPair:
        """Log in; this client then uses (and refreshes) the pair it got."""
        body = {"username": username, "password": password}
        pair = await self._call("POST", "/auth/login", TokenPair, body=body, auth=False)
        self._access, self._refresh = pair.access_token, pair.refresh_token
        return pair

    async def refresh(self) -> TokenPair:
        """Trade the refresh token for a new pair. Never retried: a refresh token is
        spent once, and spending it twice revokes the whole family."""
        if self._refresh is None:
            raise AuthError(401, "unauthorized", "no refresh token")
        body = {"refresh_token": self._refresh}
        pair = await self._call("POST", "/auth/refresh", TokenPair, body=body, auth=False)
        self._access, self._refresh = pair.access_token, pair.refresh_token
        return pair

    async def logout(self) -> None:
        """Revoke this client's token family on the server (its sockets close with 4003)."""
        await self._send("POST", "/auth/logout", retry=True)
        self._access = self._refresh = None
        self._login = None

    async def me(self) -> User:
        return await self._call("GET", "/auth/me", User, retry=True)

    # --- writes -----------------------------------------------------------------------

    async def submit(
        self,
        game: str,
        score: int | None = None,
        *,
        action: str | None = None,
        user_id: int | None = None,
        ts: int | None = None,
        signature: str | None = None,
        event_id: uuid.UUID | str | None = None,
    ) -> ScoreOut:
        """Write a score (or an action); answered once durable.

        The event id (a new uuid4 unless given) makes retries safe: after a timeout,
        a lost connection or a 503 the same write is sent again with the same id, and
        the server applies it once (`duplicate` is true when it had it already).
        Service credentials name `user_id`. A value out of shape raises ValueError
        before anything is sent.
        """
        fields: dict[str, Any] = {
            "game": game,
            "event_id": str(event_id or uuid.uuid4()),
            "score": score,
            "action": action,
            "user_id": user_id,
            "ts": ts,
            "signature": signature,
        }
        try:
            checked = msgspec.convert({k: v for k, v in fields.items() if v is not None}, ScoreIn)
        except msgspec.ValidationError as exc:
            raise ValueError(f"score write is invalid: {exc}") from None
        return await self._call("POST", "/scores", ScoreOut, body=checked, retry=True)

    # --- reads ------------------------------------------------------------------------

    async def top(
        self,
        game: str,
        period: Period = "all",
        *,
        offset: int = 0,
        limit: int = 10,
        at: date | None = None,
        ranking: Ranking = "ordinal",
        cursor: str | None = None,
    ) -> Page:
        """A page of a board; pass the page's `next_cursor` as `cursor` for the next."""
        params: dict[str, Any] = {"period": period, "limit": limit, "ranking": ranking}
        # The cursor carries its own offset.
        params |= {"offset": offset} if cursor is None else {"cursor": cursor}
        return await self._read(f"/leaderboards/{segment(game)}", Page, params, at)

    async def around(
        self,
        game: str,
        user_id: int,
        period: Period = "all",
        *,
        radius: int = 5,
        at: date | None = None,
    ) -> Page:
        """The rows around a user, `radius` above and below."""
        path = f"/leaderboards/{segment(game)}/around/{int(user_id)}"
        return await self._read(path, Page, {"period": period, "radius": radius}, at)

    async def user_rank(
        self,
        game: str,
        user_id: int | Literal["me"] = "me",
        period: Period = "all",
        *,
        at: date | None = None,
    ) -> UserRank:
        """One user's rank and score on a board (`me`: the caller)."""
        who = "me" if user_id == "me" else str(int(user_id))
        path = f"/leaderboards/{segment(game)}/users/{who}"
        return await self._read(path, UserRank, {"period": period}, at)

    async def members(
        self, game: str, user_ids: list[int], period: Period = "all", *, at: date | None = None
    ) -> MembersPage:
        """The ranks of a list of users (friends), at most 100."""
        ids = ",".join(str(int(u)) for u in user_ids)
        path = f"/leaderboards/{segment(game)}/members"
        return await self._read(path, MembersPage, {"period": period, "ids": ids}, at)

    async def ranks(self, user_id: int | Literal["me"] = "me") -> UserBoards:
        """Every board of one user (`me`: the caller), with rank and percentile."""
        who = "me" if user_id == "me" else str(int(user_id))
        return await self._call("GET", f"/users/{who}/ranks", UserBoards, retry=True)

    async def report(
        self, start: date, end: date, *, limit: int = 10, game: str | None = None
    ) -> Report:
        """The top players of [start, end) (UTC dates, `end` exclusive)."""
        params: dict[str, Any] = {"start": start.isoformat(), "end": end.isoformat()}
        params["limit"] = limit
        if game is not None:
            params["game"] = game
        return await self._call("GET", "/reports/top", Report, params=params, retry=True)

    async def report_csv(
        self, start: date, end: date, *, limit: int = 10, game: str | None = None
    ) -> str:
        """The same report as CSV text."""
        params: dict[str, Any] = {"start": start.isoformat(), "end": end.isoformat()}
        params |= {"limit": limit, "format": "csv"} | ({"game": game} if game else {})
        reply = await self._send("GET", "/reports/top", params=params, retry=True)
        return reply.text

    async def games(self) -> list[Game]:
        """Every game."""
        return (await self._call("GET", "/games", GameList, retry=True)).games

    async def game(self, game: str) -> Game:
        return await self._call("GET", f"/games/{segment(game)}", Game, retry=True)

    # --- live -------------------------------------------------------------------------

    def scoreboard(self, game: str, period: Period = "all") -> live.Subscription[live.BoardUpdate]:
        """The live top 10 of a board: a BoardUpdate on the snapshot and on every diff.

        Reconnects with backoff and `since` when the connection drops, resyncs on a gap,
        ends with SubscriptionClosed on a final close code (4003 revoked, ...)."""
        return self._subscribe(live.scoreboard(self._live(), game, period))

    def my_score(self, game: str, period: Period = "all") -> live.Subscription[live.RankMsg]:
        """The caller's own rank on a board, on connect and on every change."""
        return self._subscribe(live.my_score(self._live(), game, period))

    def scores(
        self, game: str, period: Period = "all", *, offset: int = 0, limit: int = 10
    ) -> live.Subscription[live.PageMsg]:
        """Any page of a board, live: each PageMsg replaces the previous one."""
        return self._subscribe(live.scores(self._live(), game, period, offset, limit))

    def _live(self) -> live.Link:
        ws_base = "ws" + self.base_url.removeprefix("http")
        return live.Link(self, ws_base, self.backoff, self.timeout, self.max_failures)

    def _subscribe(self, sub: live.Subscription[T]) -> live.Subscription[T]:
        self._subscriptions.add(sub)
        sub.on_close = self._subscriptions.discard
        return sub

    # --- transport --------------------------------------------------------------------

    async def _read(self, path: str, type_: type[T], params: dict[str, Any], at: date | None) -> T:
        if at is not None:
            params = params | {"at": at.isoformat()}
        return await self._call("GET", path, type_, params=params, retry=True)

    async def _call(
        self,
        method: str,
        path: str,
        type_: type[T],
        *,
        params: dict[str, Any] | None = None,
        body: object = None,
        retry: bool = False,
        auth: bool = True,
    ) -> T:
        reply = await self._send(method, path, params=params, body=body, retry=retry, auth=auth)
        return decode_reply(reply, type_)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: object = None,
        retry: bool = False,
        auth: bool = True,
    ) -> httpx.Response:
        """One request: renewed once on a 401; with `retry` (safe to repeat: reads and
        event-id writes) sent again on a transport error or a 503, with backoff; any
        request waits out a 429 for as long as its Retry-After says (within bounds)."""
        content = None if body is None else msgspec.json.encode(body)
        headers = {"Content-Type": "application/json"} if content is not None else {}
        renewed = False
        attempt = 0
        while True:
            used = None
            if auth:
                used = await self.token()
                headers["Authorization"] = f"Bearer {used}"
            try:
                reply = await self._http.request(
                    method, path, params=params, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                if not retry or attempt >= self.retries:
                    raise Unavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(self.backoff.delay(attempt))
                attempt += 1
                continue
            status = reply.status_code
            if status == 401 and used is not None and not renewed and self.can_renew():
                await self.renew(used)
                renewed = True
                continue
            wait = None
            if attempt < self.retries and (status == 429 or (status == 503 and retry)):
                wait = self.backoff.retry_after(reply.headers.get("Retry-After"), attempt)
                if status == 503:
                    wait = max(wait or 0.0, self.backoff.delay(attempt))
            if wait is not None:
                await asyncio.sleep(wait)
                attempt += 1
                continue
            if status >= 400:
                raise error_of(reply)
            return reply

    def can_renew(self) -> bool:
        """Whether a refused token can be renewed (a refresh token, or a login)."""
        return self._refresh is not None or self._login is not None
