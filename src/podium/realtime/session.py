"""One WebSocket's I/O: its single writer task, its read loop, its timers.

The decisions (queue or skip, when a socket is slow, the inbound limits, the
token's lifetime) are made by `podium.realtime.session_core`, which does no I/O;
this module feeds it events and carries out what it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
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
from podium.realtime.session_core import Inbound, Limits, Queued, SessionCore, SessionState, Stale

log = logging.getLogger("podium.ws")
_ids = itertools.count(1)


Handler = Callable[[Any], Awaitable[None]]


class Session:
    """Server side of one accepted socket: the I/O around its `SessionCore`."""

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
        self.limits = limits
        self.core = SessionCore(principal, limits, time.monotonic(), rate)
        self._receive = receive
        self._send = send
        # Writes shared pre-built frames to the transport; None: only the ASGI send.
        self._direct = direct
        self._on_close = on_close
        # Told (session, old principal) after a re-auth: the hub re-files the session.
        self._on_reauth = on_reauth
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def principal(self) -> Principal:
        return self.core.principal

    @property
    def subjects(self) -> tuple[str, ...]:
        """What a revocation may name to end this session."""
        return self.core.subjects

    @property
    def state(self) -> SessionState:
        return self.core.state

    @property
    def close_code(self) -> int | None:
        return self.core.close_code

    @property
    def rate(self) -> float:
        return self.core.rate

    @property
    def pushed(self) -> int:
        return self.core.pushed

    @property
    def dropped(self) -> int:
        return self.core.dropped

    # -- outbound ------------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")
        self._arm_expiry()

    def _queued(self, outcome: Queued) -> bool:
        if outcome is Queued.QUEUED:
            self._wake.set()
            return True
        if outcome is Queued.SLOW:
            self.close_soon(WS_SLOW)
        return False

    def push(
        self, key: str, text: str, latest: Stale | None = None, frame: bytes | None = None
    ) -> bool:
        """Queue a push of stream `key`; `latest` gives its full state if it must be skipped.

        Never blocks. With nothing else pending, the pre-built `frame` goes straight
        to the transport when it takes it now.
        """
        core = self.core
        if (
            frame is not None
            and self._direct is not None
            and core.idle
            and self._direct.write(frame)
        ):
            core.wrote_directly()
            return True
        return self._queued(core.push(key, text, time.monotonic(), latest))

    def resync(self, key: str, text: str) -> None:
        """Replace whatever is pending for `key` with a full state (after a resync)."""
        self._queued(self.core.resync(key, text))

    def reply(self, message: msgspec.Struct | str) -> None:
        """Queue an answer to a request; answers are never skipped."""
        if not self.core.open:
            return
        text = message if isinstance(message, str) else encode_text(message)
        self._queued(self.core.reply(text))

    async def _write_loop(self) -> None:
        send = self._send
        core = self.core
        try:
            while True:
                text = core.next_outbound()
                if text is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                try:
                    await send({"type": "websocket.send", "text": text})
                finally:
                    core.sent()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The peer went away mid-send: the read loop sees the disconnect.
            core.finish()

    # -- closing -------------------------------------------------------------------

    def close_soon(self, code: CloseCode) -> None:
        """Close from synchronous code (hub, timers); the close frame goes out shortly."""
        if self.core.open and self._closer is None:
            self._closer = asyncio.create_task(self.close(code), name=f"ws-close-{self.id}")

    async def close(self, code: CloseCode) -> None:
        """Send a close frame with `code` (skipping whatever is still queued)."""
        if not self.core.begin_close(code):
            return
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
        self.core.finish()
        if self._on_close is not None:
            self._on_close(self)

    # -- token lifetime --------------------------------------------------------------

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        delay = self.core.expires_in(time.time())
        if delay is not None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(delay, self.close_soon, WS_TOKEN_EXPIRED)

    async def _reauth(self, token: str) -> None:
        try:
            principal = await authenticate_token(self.services, token)
        except TokenError as exc:
            self._bad("unauthorized", str(exc))
            return
        if not self.core.open:
            return  # closed while the token was checked
        old = self.core.reauth(principal)
        if old is None:
            self._bad("forbidden", "the token is for another principal")
            return
        self._arm_expiry()
        if self._on_reauth is not None:
            self._on_reauth(self, old)
        self.reply(Authed(exp=principal.exp))

    # -- inbound -------------------------------------------------------------------

    def _strike(self, code: CloseCode) -> None:
        close = self.core.strike(code)
        if close is not None:
            self.close_soon(close)

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
        core = self.core
        while core.open:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
                continue
            text = message.get("text")
            match core.inbound(text, time.monotonic()):
                case Inbound.BINARY:
                    self._bad(
                        "binary_unsupported", "binary frames are not accepted; send JSON text"
                    )
                    continue
                case Inbound.TOO_BIG:
                    # RFC 6455 7.4.1: 1009 "a message that is too big for it to process".
                    await self.close(WS_TOO_BIG)
                    return
                case Inbound.RATE_LIMITED:
                    self._bad("rate_limited", f"over {core.rate:g} messages per second", WS_RATE)
                    continue
            assert text is not None
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
