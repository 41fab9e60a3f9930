"""Live subscriptions over Podium's WebSocket channels, with reconnects that resume.

Each subscription is one socket at a time. When it drops with a close code that says
reconnect (1001, 1011, 1012, 4009, 4010, 4029, or no close frame at all) it connects
again after a backoff with jitter; the scoreboard sends `since=<seq>` so the server
answers `synced` (nothing missed) or a fresh snapshot. A diff whose `prev_seq` is not
the held seq is a gap: the socket is replaced at once with `since`, and the snapshot
resyncs. 4001 (token expired) refreshes the token first. A final close code (4003
revoked, 4008 policy, 1007/1009 bad frames, 4030 too many sockets, 1000) or a refused
handshake ends the iterator with SubscriptionClosed; a message that is not Podium's
protocol ends it with ProtocolError.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, Generic, Literal, Protocol, TypeVar
from urllib.parse import urlencode

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from podium.client.backoff import Backoff
from podium.client.errors import ApiError, ProtocolError, SubscriptionClosed, Unavailable
from podium.errors import CLOSE_CODES, WS_PERIOD_ENDED, WS_TOKEN_EXPIRED
from podium.protocol import (
    Auth,
    Diff,
    Error,
    PageMsg,
    RankMsg,
    Row,
    ServerMessage,
    Snapshot,
    Synced,
    encode_text,
)

__all__ = ["BoardUpdate", "Link", "PageMsg", "RankMsg", "Row", "Subscription"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Kind = Literal["snapshot", "diff"]

# 1006: the connection dropped without a close frame (a crash, a cut network).
RECONNECT = frozenset({c.code for c in CLOSE_CODES if c.reconnect} | {1006})
# The server's frames are far smaller (a page of 200 rows is ~30 KiB).
MAX_MESSAGE = 4 * 1024 * 1024
_decoder = msgspec.json.Decoder(ServerMessage)


class Credentials(Protocol):
    """What a subscription needs of its client: the token, and a way to renew it."""

    async def token(self) -> str: ...

    async def renew(self, used: str) -> None: ...

    def can_renew(self) -> bool: ...


class Link:
    """Where and how a subscription connects, and what it did (for logs and tests)."""

    def __init__(
        self,
        creds: Credentials,
        ws_base: str,
        backoff: Backoff,
        timeout: float,
        max_failures: int | None = None,
    ) -> None:
        self.creds = creds
        self.ws_base = ws_base
        self.backoff = backoff
        self.timeout = timeout
        # Consecutive failed connects before Unavailable; None: keep trying.
        self.max_failures = max_failures
        self.failures = 0
        self.connects = 0
        self.last_params: dict[str, Any] = {}

    async def pause(self, why: str) -> None:
        if self.max_failures is not None and self.failures >= self.max_failures:
            raise Unavailable(f"gave up after {self.failures} failed connects: {why}")
        await asyncio.sleep(self.backoff.delay(self.failures))
        self.failures += 1


class BoardUpdate(msgspec.Struct, kw_only=True):
    """The live top of a board after a snapshot or a diff was applied.

    `entries` is the whole top, sorted by rank; `upserts` and `left` are what this
    update changed (for a snapshot: every entry, and nobody)."""

    board: str
    seq: int
    kind: Kind
    entries: list[Row]
    upserts: list[Row]
    left: list[int]


class Subscription(Generic[T]):
    """An async iterator of one channel's updates; `aclose()` (or `async with`) ends it."""

    def __init__(self, link: Link, run: Callable[[Link], AsyncGenerator[T, None]]) -> None:
        self.link = link
        self._gen = run(link)
        self._reader: asyncio.Task[Any] | None = None
        self.on_close: Callable[[Subscription[T]], None] | None = None

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        self._reader = asyncio.current_task()
        try:
            return await self._gen.__anext__()
        finally:
            self._reader = None

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End it, also while another task waits for its next update (that task gets
        CancelledError): the socket is closed either way."""
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.wait({reader})
        await self._gen.aclose()
        if self.on_close is not None:
            self.on_close(self)


class _Resync:
    """A handler's answer: replace the socket now (a gap in the diffs)."""


RESYNC = _Resync()


class _Channel(Protocol[T_co]):
    path: str

    def params(self) -> dict[str, Any]: ...

    def take(self, message: Any) -> T_co | _Resync | None: ...

    def closed(self, code: int) -> None: ...


class _Scoreboard:
    path = "scoreboard"

    def __init__(self, game: str, period: str) -> None:
        self.game, self.period = game, period
        self.seq: int | None = None
        self.rows: dict[int, Row] = {}
        self.board = ""

    def params(self) -> dict[str, Any]:
        since = {} if self.seq is None else {"since": self.seq}
        return {"game": self.game, "period": self.period, **since}

    def take(self, message: Any) -> BoardUpdate | _Resync | None:
        if isinstance(message, Snapshot):
            self.rows = {row.user_id: row for row in message.entries}
            self.seq, self.board = message.seq, message.board
            return self._update("snapshot", list(message.entries), [])
        if isinstance(message, Diff):
            if message.prev_seq != self.seq:
                return RESYNC
            for user_id in message.left:
                self.rows.pop(user_id, None)
            self.rows.update((row.user_id, row) for row in message.upserts)
            self.seq = message.seq
            return self._update("diff", list(message.upserts), list(message.left))
        if isinstance(message, Synced):
            self.seq = message.seq
        return None

    def _update(
        self, kind: Literal["snapshot", "diff"], up: list[Row], left: list[int]
    ) -> BoardUpdate:
        assert self.seq is not None
        entries = sorted(self.rows.values(), key=lambda row: row.rank)
        return BoardUpdate(
            board=self.board, seq=self.seq, kind=kind, entries=entries, upserts=up, left=left
        )

    def closed(self, code: int) -> None:
        if code == WS_PERIOD_ENDED.code:
            self.seq, self.rows = None, {}  # the next period is another board


class _Replace(Generic[T]):
    """Channels whose every message replaces the last (my-score ranks, pages)."""

    def __init__(self, path: str, kind: type[T], params: dict[str, Any]) -> None:
        self.path, self.kind, self._params = path, kind, params

    def params(self) -> dict[str, Any]:
        return self._params

    def take(self, message: Any) -> T | None:
        return message if isinstance(message, self.kind) else None

    def closed(self, code: int) -> None:
        pass


def scoreboard(link: Link, game: str, period: str) -> Subscription[BoardUpdate]:
    return Subscription(link, lambda lk: _run(lk, _Scoreboard(game, period)))


def my_score(link: Link, game: str, period: str) -> Subscription[RankMsg]:
    channel = _Replace("my-score", RankMsg, {"game": game, "period": period})
    return Subscription(link, lambda lk: _run(lk, channel))


def scores(link: Link, game: str, period: str, offset: int, limit: int) -> Subscription[PageMsg]:
    params = {"game": game, "period": period, "offset": offset, "limit": limit}
    channel = _Replace("scores", PageMsg, params)
    return Subscription(link, lambda lk: _run(lk, channel))


async def _run(link: Link, channel: _Channel[T]) -> AsyncGenerator[T, None]:
    while True:
        ws, token = await _open(link, channel.path, channel.params())
        renew_at = refresh_time(token)
        code: int | None = None
        try:
            while code is None:
                try:
                    if renew_at is not None and time.time() >= renew_at:
                        token, renew_at = await _reauth(link, ws, token)
                        continue
                    wait = None if renew_at is None else renew_at - time.time()
                    raw = await asyncio.wait_for(ws.recv(), wait)  # recv: cancellation-safe
                except TimeoutError:
                    continue
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else 1006
                    if code not in RECONNECT:
                        reason = exc.rcvd.reason if exc.rcvd else ""
                        raise SubscriptionClosed(code, reason) from None
                    break
                message = _decode(raw, channel.path)
                link.failures = 0
                if isinstance(message, Error):
                    if message.code in ("unauthorized", "forbidden"):
                        continue  # our `auth` was refused: the old token stands until 4001
                    raise ApiError(0, message.code, message.message, message.details)
                out = channel.take(message)
                if isinstance(out, _Resync):
                    break
                if out is not None:
                    yield out
        finally:
            await ws.close()
        if code is None:
            continue  # a gap: resync now, with since
        channel.closed(code)
        if code == WS_TOKEN_EXPIRED.code:
            await link.creds.renew(token)
        await link.pause(f"closed {code}")


async def _reauth(link: Link, ws: ClientConnection, token: str) -> tuple[str, float | None]:
    """The token is about to expire: hand the socket a fresh one rather than be closed
    with 4001 and reconnect. While the server cannot renew it (Unavailable), try again
    in a second; the socket goes on meanwhile."""
    try:
        await link.creds.renew(token)
    except Unavailable:
        return token, time.time() + 1
    token = await link.creds.token()
    await ws.send(encode_text(Auth(token=token)))
    return token, refresh_time(token)


def refresh_time(token: str) -> float | None:
    """When to renew an access token on an open socket: a quarter of its life (at most
    30 s) before its `exp`. Read without verifying: it only times the refresh. None for
    a service credential or anything that is not a JWT."""
    try:
        payload = token.split(".")[1]
        claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp, iat = float(claims["exp"]), float(claims.get("iat", claims["exp"]))
    except Exception:
        return None
    return exp - min(30.0, max(0.0, exp - iat) / 4)


async def _open(link: Link, path: str, params: dict[str, Any]) -> tuple[ClientConnection, str]:
    """A socket on `path`, retried with backoff while the failure may pass."""
    renewed = False
    while True:
        token = await link.creds.token()
        url = f"{link.ws_base}/ws/v1/{path}?{urlencode(params)}"
        try:
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=link.timeout,
                max_size=MAX_MESSAGE,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 403 and not renewed and link.creds.can_renew():
                await link.creds.renew(token)
                renewed = True
                continue
            if status != 429 and status < 500:
                raise SubscriptionClosed(status, _reason(exc.response.body)) from None
            await link.pause(f"handshake {status}")
            continue
        except InvalidMessage as exc:
            # A peer that hung up mid-handshake (a restart) may pass; one that answered
            # something that is not HTTP is not Podium.
            if not isinstance(exc.__cause__, EOFError | ConnectionError):
                raise ProtocolError(f"{url}: the handshake answer is not HTTP: {exc}") from None
            await link.pause(str(exc))
            continue
        except (OSError, TimeoutError) as exc:
            await link.pause(f"{type(exc).__name__}: {exc}")
            continue
        link.connects += 1
        link.last_params = dict(params)
        return ws, token


def _decode(raw: str | bytes, path: str) -> Any:
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        shown = raw[:80]
        raise ProtocolError(f"/ws/v1/{path}: not a Podium message ({exc}): {shown!r}") from None
    except RecursionError:
        raise ProtocolError(f"/ws/v1/{path}: a message nests too deeply") from None


def _reason(body: bytes | bytearray | None) -> str:
    """The refusal's message from Podium's `{"error": ...}` body, or its first bytes."""
    try:
        return str(msgspec.json.decode(body or b"{}")["error"]["message"])
    except Exception:
        return bytes(body or b"")[:80].decode(errors="replace")
