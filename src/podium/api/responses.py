"""JSON responses encoded by msgspec, and request-body decoding with clear errors."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from podium.errors import ApiError, bad_request, invalid

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def error_response(err: ApiError) -> JSON:
    return JSON(err.body(), status_code=err.status, headers=err.headers)


async def read_json(request: Request, type_: type[T], max_bytes: int = 64 * 1024) -> T:
    """Decode the body into `type_`: 400 when it is not JSON, 422 when it does not fit."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, "too_large", f"request body over {max_bytes} bytes")
    return decode_json(bytes(body), type_)


def decode_json(data: bytes, type_: type[T]) -> T:
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise bad_request("request body is not valid JSON") from None
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        raise invalid("request body is invalid", validation_details(str(exc))) from None


_NAMED_FIELD = re.compile(r"^Object (missing required|contains unknown) field `([^`]*)`$")


def validation_details(text: str) -> dict[str, str]:
    """msgspec says "Expected `int`, got `str` - at `$.score`"; key it by field.

    A missing or unknown field is keyed by its own name ("password": "required").
    """
    message, _, path = text.partition(" - at `")
    field = path.rstrip("`").removeprefix("$.").removeprefix("$")
    if named := _NAMED_FIELD.match(message):
        field = f"{field}.{named[2]}" if field else named[2]
        message = "required" if named[1] == "missing required" else "unknown field"
    return {field or "body": message}
