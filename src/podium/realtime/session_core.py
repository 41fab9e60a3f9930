"""The state of one socket session, with no I/O: events in, decisions out.

In the style of python-websockets' `protocol.py`: `SessionCore` holds the outbound
queue, the lag of skipped streams, the inbound token bucket, the malformed-message
strikes and the token's lifetime as plain state. Its methods take the time as an
argument and answer what to do (queue, skip, close with which code); sending,
timers and tasks belong to `podium.realtime.session`, which wraps it.

Pushes never wait on the socket: a stream whose push finds the queue full is
skipped until the writer drained the queue, then gets the stream's latest full
state (a snapshot) instead; a socket that stays behind longer than
`Limits.slow_after` is closed with 4009 (docs/protocol.md, "Slow clients").
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable

import msgspec

from podium.auth.tokens import Principal
from podium.errors import WS_POLICY, CloseCode


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


class Queued(enum.Enum):
    """What became of one outbound message."""

    QUEUED = "queued"  # in the queue: wake the writer
    SKIPPED = "skipped"  # the stream lags: its latest state goes out after the drain
    SLOW = "slow"  # behind for too long: close with 4009
    REFUSED = "refused"  # the session is no longer open


class Inbound(enum.Enum):
    """The verdict on one received frame, before it is decoded."""

    ACCEPT = "accept"
    BINARY = "binary"  # answer `binary_unsupported` and strike
    TOO_BIG = "too_big"  # close with 1009
    RATE_LIMITED = "rate_limited"  # answer `rate_limited` and strike with 4029


# A stream's full state: the text itself, or a callable that encodes it on demand
# (None: nothing to send any more).
Stale = str | Callable[[], str | None]


class SessionCore:
    """One session's state: outbound queue and lag, inbound limits, token lifetime.

    Times are floats in seconds: `now` is a monotonic clock (the bucket, the lag),
    `wall` is the Unix time (token expiry is a Unix timestamp).
    """

    def __init__(
        self, principal: Principal, limits: Limits, now: float, rate: float | None = None
    ) -> None:
        self.principal = principal
        self.limits = limits
        self.state = SessionState.OPEN
        self.close_code: int | None = None
        self._queue: deque[str] = deque()
        self._lagging: dict[str, Stale] = {}
        self._lag_since: float | None = None
        self._in_flight = False
        # Inbound messages per second, as a token bucket holding two seconds' worth.
        self.rate = rate if rate is not None else limits.messages_per_second
        self.burst = max(float(limits.burst), 2 * self.rate)
        self._tokens = self.burst
        self._abuse = 0.0
        self._last = now
        self.pushed = 0
        self.dropped = 0

    # -- state -------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self.state is SessionState.OPEN

    def begin_close(self, code: CloseCode) -> bool:
        """OPEN -> CLOSING with `code`; False when the session is closing already."""
        if self.state is not SessionState.OPEN:
            return False
        self.state = SessionState.CLOSING
        self.close_code = code.code
        # Whatever is still queued is skipped: the close frame goes next.
        self._queue.clear()
        self._lagging.clear()
        return True

    def finish(self) -> None:
        """The socket is gone (closed by either side, or lost)."""
        self.state = SessionState.CLOSED

    # -- outbound ----------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing queued, lagging or being sent: a frame written now keeps the order."""
        return (
            self.state is SessionState.OPEN
            and not self._queue
            and not self._lagging
            and not self._in_flight
        )

    def wrote_directly(self) -> None:
        """A push went straight to the transport (only while `idle`)."""
        if not self.idle:
            raise RuntimeError("a direct write would overtake queued messages")
        self.pushed += 1

    def push(self, key: str, text: str, now: float, latest: Stale | None = None) -> Queued:
        """Queue a push of stream `key`; `latest` gives its full state if it must be skipped.

        A stream that missed one push skips the rest until the writer drains, then
        gets `latest` (or the newest full `text` when pushes are full states).
        """
        if self.state is not SessionState.OPEN:
            return Queued.REFUSED
        if key in self._lagging or len(self._queue) >= self.limits.queue_size:
            self._lagging[key] = latest if latest is not None else text
            self.dropped += 1
            if self._lag_since is None:
                self._lag_since = now
            elif now - self._lag_since > self.limits.slow_after:
                return Queued.SLOW
            return Queued.SKIPPED
        self.pushed += 1
        self._queue.append(text)
        return Queued.QUEUED

    def resync(self, key: str, text: str) -> Queued:
        """Replace whatever is pending for `key` with a full state (after a resync)."""
        if self.state is not SessionState.OPEN:
            return Queued.REFUSED
        if key in self._lagging or len(self._queue) >= self.limits.queue_size:
            self._lagging[key] = text
            return Queued.SKIPPED
        self._queue.append(text)
        return Queued.QUEUED

    def reply(self, text: str) -> Queued:
        """Queue an answer to a request; answers are never skipped."""
        if self.state is not SessionState.OPEN:
            return Queued.REFUSED
        if len(self._queue) >= 4 * self.limits.queue_size:
            # Requests are rate-limited, so only a client that stopped reading gets here.
            return Queued.SLOW
        self._queue.append(text)
        return Queued.QUEUED

    def next_outbound(self) -> str | None:
        """The next text to send, now in flight until `sent`; None: wait for a push.

        Once the queue is drained, every lagging stream's latest state is queued
        (and the socket is no longer behind).
        """
        if self._in_flight:
            raise RuntimeError("next_outbound before the previous message was sent")
        while not self._queue and self._lagging:
            stale, self._lagging = self._lagging, {}
            self._lag_since = None
            for value in stale.values():
                text = value() if callable(value) else value
                if text is not None:
                    self._queue.append(text)
        if not self._queue:
            return None
        self._in_flight = True
        return self._queue.popleft()

    def sent(self) -> None:
        """The text from `next_outbound` is out (or failed to go out)."""
        if not self._in_flight:
            raise RuntimeError("sent without a message in flight")
        self._in_flight = False

    # -- inbound -----------------------------------------------------------------------

    def inbound(self, text: str | None, now: float) -> Inbound:
        """Admit one received frame (`text` None: a binary frame), spending a token."""
        elapsed = now - self._last
        self._last = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._abuse = max(0.0, self._abuse - elapsed)
        if text is None:
            return Inbound.BINARY
        limit = self.limits.max_message_bytes
        # A str has at most 4 UTF-8 bytes per character: encode only when it may be over.
        if len(text) > limit // 4 and len(text.encode()) > limit:
            return Inbound.TOO_BIG
        if self._tokens < 1:
            return Inbound.RATE_LIMITED
        self._tokens -= 1
        return Inbound.ACCEPT

    def strike(self, code: CloseCode = WS_POLICY) -> CloseCode | None:
        """Count one malformed or abusive message; the close code once over the limit."""
        self._abuse += 1
        if self._abuse > self.limits.max_abuse:
            return code
        return None

    def admit_subscription(self, current: int) -> bool:
        """Whether a socket holding `current` subscriptions may take one more."""
        return current < self.limits.max_subscriptions

    # -- the token's lifetime ------------------------------------------------------------

    def expires_in(self, wall: float) -> float | None:
        """Seconds until the token expires (then close with 4001); None: it never does."""
        if not self.principal.exp:
            return None
        return max(0.0, self.principal.exp - wall)

    def reauth(self, principal: Principal) -> Principal | None:
        """Take a fresh token's principal; the old one, or None if it is someone else's."""
        if self.state is not SessionState.OPEN:
            raise RuntimeError(f"re-authentication on a {self.state.value} session")
        old = self.principal
        if principal.kind != old.kind or principal.user_id != old.user_id:
            return None
        self.principal = principal
        return old

    @property
    def subjects(self) -> tuple[str, ...]:
        """What a revocation may name to end this session: token family, credential."""
        p = self.principal
        return tuple(s for s in (p.family, p.credential) if s)
