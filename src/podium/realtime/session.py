"""One WebSocket: its bounded outbound queue and single writer, its read loop and limits.

Pushes never wait on the socket: `push` appends to a bounded queue and returns. A
socket whose queue is full skips further pushes of that stream and, once its
writer drained the queue, gets the stream's latest full state (a snapshot) instead;
one that stays behind longer than `Limits.slow_after` is closed with 4009.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.types import Receive, Send

from podium import metrics
from podium.auth.guards import authenticate_token
from podium.auth.tokens import Principal, TokenError
from podium.errors import (
    WS_INTERNAL,
    WS_POLICY,
    WS_RATE,
    WS_SLOW,
    WS_TOKEN_EXPIRED,
    WS_TOO_BIG,
    ApiError,
    CloseCode,
)
from podium.protocol import (
    Auth,
    Authed,
    BadMessage,
    Error,
    Ping,
    Pong,
    SeedPageRequest,
    SeedReportRequest,
    decode_client,
    encode_text,
)
from podium.realtime.direct import DirectSender

log = logging.getLogger("podium.ws")
_ids = itertools.count(1)


class Limits(msgspec.Struct, kw_only=True):
    """Per-socket limits (documented in docs/protocol.md)."""

    max_message_bytes: int = 64 * 1024
    messages_per_second: float = 20.0
    burst: int = 40
    # Malformed or rate-limited messages add one each and decay at one per second.
    max_abuse: int = 20
    max_subscriptions: int = 20
    max_sockets_per_user: int = 20
    queue_size: int = 64
    slow_after: float = 5.0
    max_inflight_writes: int = 32


class SessionState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


Stale = str | Callable[[], str | None]
Handler = Callable[[Any], Awaitable[None]]


class Session:
    """Server side of one accepted socket."""

    def __init__(
        self,
        services: Any,
        principal: Principal,
        receive: Receive,
        send: Send,
        limits: Limits,
        on_close: Callable[[Session], None] | None = None,
        rate: float | None = None,
        direct: DirectSender | None = None,
        on_reauth: Callable[[Session, Principal], None] | None = None,
    ) -> None:
        self.id = next(_ids)
        self.services = services
        self.principal = principal
        self.limits = limits
        self.state = SessionState.OPEN
        self._receive = receive
        self._send = send
        # Writes shared pre-built frames to the transport; None: only the ASGI send.
        self._direct = direct
        self._sending = False
        self._on_close = on_close
        # Told (session, old principal) after a re-auth: the hub re-files the session.
        self._on_reauth = on_reauth
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()
        self._lagging: dict[str, Stale] = {}
        self._lag_since: float | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        # Inbound messages per second, as a token bucket holding two seconds' worth.
        self.rate = rate if rate is not None else limits.messages_per_second
        self.burst = max(float(limits.burst), 2 * self.rate)
        self._tokens = self.burst
        self._abuse = 0.0
        self._last = time.monotonic()
        self.pushed = 0
        self.dropped = 0
        self.close_code: int | None = None

    # -- outbound ------------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")
        self._arm_expiry()

    def push(
        self, key: str, text: str, latest: Stale | None = None, frame: bytes | None = None
    ) -> bool:
        """Queue a push of stream `key`; `latest` gives its full state if it must be skipped.

        Never blocks. A stream that missed one push skips the rest until the
        writer drains, then gets `latest` (or the newest full `text` when pushes
        are themselves full states).
        """
        if self.state is not SessionState.OPEN:
            return False
        if (
            frame is not None
            and self._direct is not None
            and not self._queue
            and not self._lagging
            and not self._sending  # its frame must go out before ours
            and self._direct.write(frame)
        ):
            self.pushed += 1
            return True
        if key in self._lagging or len(self._queue) >= self.limits.queue_size:
            self._lagging[key] = latest if latest is not None else text
            self.dropped += 1
            now = time.monotonic()
            if self._lag_since is None:
                self._lag_since = now
            elif now - self._lag_since > self.limits.slow_after:
                self.close_soon(WS_SLOW)
            return False
        self.pushed += 1
        self._queue.append(text)
        self._wake.set()
        return True

    def resync(self, key: str, text: str) -> None:
        """Replace whatever is pending for `key` with a full state (after a resync)."""
        if self.state is not SessionState.OPEN:
            return
        if key in self._lagging or len(self._queue) >= self.limits.queue_size:
            self._lagging[key] = text
            return
        self._queue.append(text)
        self._wake.set()

    def reply(self, message: msgspec.Struct | str) -> None:
        """Queue an answer to a request; answers are never skipped."""
        if self.state is not SessionState.OPEN:
            return
        if len(self._queue) >= 4 * self.limits.queue_size:
            # Requests are rate-limited, so only a client that stopped reading gets here.
            self.close_soon(WS_SLOW)
            return
        self._queue.append(message if isinstance(message, str) else encode_text(message))
        self._wake.set()

    async def _write_loop(self) -> None:
        send = self._send
        try:
            while True:
                while self._queue:
                    text = self._queue.popleft()
                    self._sending = True
                    try:
                        await send({"type": "websocket.send", "text": text})
                    finally:
                        self._sending = False
                if self._lagging:
                    stale, self._lagging = self._lagging, {}
                    self._lag_since = None
                    for value in stale.values():
                        text = value() if callable(value) else value
                        if text is not None:
                            self._queue.append(text)
                    continue
                self._wake.clear()
                await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The peer went away mid-send: the read loop sees the disconnect.
            self.state = SessionState.CLOSED

    # -- closing -------------------------------------------------------------------

    def close_soon(self, code: CloseCode) -> None:
        """Close from synchronous code (hub, timers); the close frame goes out shortly."""
        if self.state is SessionState.OPEN and self._closer is None:
            self._closer = asyncio.create_task(self.close(code), name=f"ws-close-{self.id}")

    async def close(self, code: CloseCode) -> None:
        """Send a close frame with `code` (skipping whatever is still queued)."""
        if self.state is not SessionState.OPEN:
            return
        self.state = SessionState.CLOSING
        self.close_code = code.code
        if code is WS_SLOW:
            metrics.SLOW_CLOSES.inc()
        await self._stop_writer()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code.code, "reason": code.reason}),
                5.0,
            )

    async def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    async def teardown(self) -> None:
        """Always run when the socket ends, whatever ended it."""
        if self._expiry is not None:
            self._expiry.cancel()
        await self._stop_writer()
        closer = self._closer
        if closer is not None and closer is not asyncio.current_task() and not closer.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(closer), 6.0)
        self.state = SessionState.CLOSED
        if self._on_close is not None:
            self._on_close(self)

    # -- token lifetime --------------------------------------------------------------

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.principal.exp:
            delay = max(0.0, self.principal.exp - time.time())
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(delay, self.close_soon, WS_TOKEN_EXPIRED)

    async def _reauth(self, token: str) -> None:
        try:
            principal = await authenticate_token(self.services, token)
        except TokenError as exc:
            self.reply(Error(code="unauthorized", message=str(exc)))
            self._strike(WS_POLICY)
            return
        if principal.kind != self.principal.kind or principal.user_id != self.principal.user_id:
            self.reply(Error(code="forbidden", message="the token is for another principal"))
            self._strike(WS_POLICY)
            return
        old = self.principal
        self.principal = principal
        self._arm_expiry()
        if self._on_reauth is not None:
            self._on_reauth(self, old)
        self.reply(Authed(exp=principal.exp))

    # -- inbound -------------------------------------------------------------------

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed = now - self._last
        self._last = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._abuse = max(0.0, self._abuse - elapsed)

    def _strike(self, code: CloseCode) -> None:
        self._abuse += 1
        if self._abuse > self.limits.max_abuse:
            self.close_soon(code)

    def _bad(
        self,
        code: str,
        message: str,
        close: CloseCode = WS_POLICY,
        event_id: str | None = None,
    ) -> None:
        self.reply(Error(code=code, message=message, event_id=event_id))
        self._strike(close)

    async def run(
        self, handle: Handler, seed: type[SeedPageRequest] | type[SeedReportRequest] | None = None
    ) -> None:
        """Read frames until the socket ends; hand each decoded request to `handle`."""
        limit = self.limits.max_message_bytes
        while self.state is SessionState.OPEN:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
                continue
            self._refill()
            text = message.get("text")
            if text is None:
                self._bad("binary_unsupported", "binary frames are not accepted; send JSON text")
                continue
            if len(text) > limit // 4 and len(text.encode()) > limit:
                # RFC 6455 7.4.1: 1009 "a message that is too big for it to process".
                await self.close(WS_TOO_BIG)
                return
            if self._tokens < 1:
                self._bad(
                    "rate_limited",
                    f"over {self.rate:g} messages per second",
                    WS_RATE,
                )
                continue
            self._tokens -= 1
            try:
                request = decode_client(text, seed)
            except BadMessage as exc:
                self._bad(exc.code, exc.message, event_id=exc.event_id)
                continue
            match request:
                case Ping():
                    self.reply(Pong())
                case Auth(token=token):
                    await self._reauth(token)
                case _:
                    await self._dispatch(handle, request)

    async def _dispatch(self, handle: Handler, request: Any) -> None:
        try:
            await handle(request)
        except ApiError as exc:
            self.reply(error_of(exc, getattr(request, "event_id", None)))
            if exc.status in (400, 422):
                self._strike(WS_POLICY)
        except Exception:
            log.exception("websocket handler failed", extra={"session": self.id})
            await self.close(WS_INTERNAL)


def error_of(exc: ApiError, event_id: str | None = None) -> Error:
    return Error(code=exc.code, message=exc.message, event_id=event_id, details=exc.details)
