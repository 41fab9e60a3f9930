"""One table of error codes (HTTP) and close codes (WebSocket).

Every error a client sees has the body
`{"error": {"code": "...", "message": "...", "details": ...}}`; internal errors are
logged and answered without detail.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class ApiError(Exception):
    """An error meant for the client: its status, code and message are safe to show."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def bad_request(message: str, details: Any = None) -> ApiError:
    return ApiError(400, "bad_request", message, details)


def invalid(message: str, details: Any = None) -> ApiError:
    return ApiError(422, "invalid", message, details)


def unauthorized(message: str = "authentication required") -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str, code: str = "forbidden") -> ApiError:
    return ApiError(403, code, message)


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(message: str, code: str = "conflict") -> ApiError:
    return ApiError(409, code, message)


def rate_limited(retry_after: int) -> ApiError:
    retry_after = max(1, int(retry_after))
    return ApiError(
        429,
        "rate_limited",
        f"too many requests; retry in {retry_after}s",
        {"retry_after": retry_after},
        {"Retry-After": str(retry_after)},
    )


def unavailable(message: str, code: str = "unavailable") -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": "1"})


class CloseCode(NamedTuple):
    code: int
    reason: str
    reconnect: bool
    meaning: str


# WebSocket close codes. 1xxx are RFC 6455; 4xxx are Podium's own.
WS_NORMAL = CloseCode(1000, "normal", False, "the client or server ended the session")
WS_GOING_AWAY = CloseCode(1001, "going away", True, "the server is shutting down; reconnect")
WS_UNSUPPORTED = CloseCode(1003, "unsupported data", False, "binary frames are not accepted")
# Sent by the WebSocket layer itself (RFC 6455 8.1): a text frame must be UTF-8.
WS_BAD_UTF8 = CloseCode(1007, "invalid payload", False, "a text frame was not valid UTF-8")
WS_TOO_BIG = CloseCode(1009, "message too big", False, "a frame exceeded the size limit")
WS_INTERNAL = CloseCode(1011, "internal error", True, "unexpected server error; reconnect")
WS_RESTART = CloseCode(1012, "service restart", True, "the server is restarting; reconnect")
WS_TOKEN_EXPIRED = CloseCode(4001, "token expired", True, "refresh the token, then reconnect")
WS_REVOKED = CloseCode(4003, "revoked", False, "the token was revoked (logout)")
WS_POLICY = CloseCode(4008, "policy violation", False, "repeated malformed or abusive input")
WS_SLOW = CloseCode(4009, "slow", True, "the client fell behind its pushes; reconnect")
WS_PERIOD_ENDED = CloseCode(
    4010, "period ended", True, "the day/week/month board rolled over; reconnect for the new one"
)
WS_RATE = CloseCode(4029, "rate limited", True, "too many messages per second; back off")
WS_TOO_MANY_SOCKETS = CloseCode(4030, "too many sockets", False, "socket limit per user reached")

CLOSE_CODES: tuple[CloseCode, ...] = (
    WS_NORMAL,
    WS_GOING_AWAY,
    WS_UNSUPPORTED,
    WS_BAD_UTF8,
    WS_TOO_BIG,
    WS_INTERNAL,
    WS_RESTART,
    WS_TOKEN_EXPIRED,
    WS_REVOKED,
    WS_POLICY,
    WS_SLOW,
    WS_PERIOD_ENDED,
    WS_RATE,
    WS_TOO_MANY_SOCKETS,
)
