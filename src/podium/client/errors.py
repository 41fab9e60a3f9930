"""What the client raises: one base class, so a game server can catch Podium alone."""

from __future__ import annotations

from typing import Any


class PodiumError(Exception):
    """Base of every error the client raises."""


class ApiError(PodiumError):
    """The server refused a request: its HTTP status and the `{"error": ...}` body."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class AuthError(ApiError):
    """No usable credential: the token was refused and could not be refreshed."""


class ProtocolError(PodiumError):
    """The server (or whatever answered at its address) sent something that is not
    Podium's protocol: not JSON, or JSON of the wrong shape. Never retried."""


class Unavailable(PodiumError):
    """The server could not be reached (or kept answering 503) within the retries."""


class SubscriptionClosed(PodiumError):
    """A live subscription ended for good: a close code that says not to reconnect
    (4003 revoked, 1008/4008 policy, 1007/1009 bad frames, 4030 too many sockets...),
    or a handshake the server refused (403 after a refresh, 400/404/422)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"subscription closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason
