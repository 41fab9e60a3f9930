"""HTTP replies as the client reads them: decoded into Structs, refusals into errors,
and anything that is not Podium's into a ProtocolError."""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import quote

import httpx
import msgspec

from podium.client.errors import ApiError, AuthError, PodiumError, ProtocolError, Unavailable
from podium.client.types import ErrorReply

T = TypeVar("T")

# A reply larger than this is not Podium's (the largest page is 200 rows, a report
# 1000): refused rather than decoded.
MAX_REPLY_BYTES = 8 * 1024 * 1024


def segment(game: str) -> str:
    """A game id as one path segment: the server answers 404 for anything not a slug;
    quoting keeps a '/' or '..' in it from reaching another route."""
    if game and set(game) <= {"."}:  # "." and ".." would be resolved away as dot-segments
        return "%2E" * len(game)
    return quote(game, safe="")


def decode_reply(reply: httpx.Response, type_: type[T]) -> T:
    data = reply.content
    if len(data) > MAX_REPLY_BYTES:
        raise ProtocolError(f"{reply.request.url.path}: reply of {len(data)} bytes is too large")
    try:
        return msgspec.json.decode(data, type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(
            f"{reply.request.method} {reply.request.url.path} answered {reply.status_code} "
            f"with a body that is not a {type_.__name__}: {exc}; starts {data[:80]!r}"
        ) from None
    except RecursionError:
        raise ProtocolError(f"{reply.request.url.path}: reply nests too deeply") from None


def error_of(reply: httpx.Response) -> PodiumError:
    """The refusal as an ApiError (AuthError for 401); a 5xx not in Podium's shape (a
    proxy's page) as Unavailable, any other reply not in it as ProtocolError."""
    status = reply.status_code
    try:
        err = msgspec.json.decode(reply.content, type=ErrorReply).error
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        if status >= 500:
            return Unavailable(f"{reply.request.url.path}: HTTP {status}")
        return ProtocolError(
            f"{reply.request.url.path} answered {status} without Podium's error body: "
            f"{reply.content[:80]!r}"
        )
    if status == 503:
        return Unavailable(f"{reply.request.url.path}: {err.code}: {err.message}")
    kind = AuthError if status == 401 else ApiError
    return kind(status, err.code, err.message, err.details)
