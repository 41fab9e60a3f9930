"""JSON responses encoded by msgspec, and request-body decoding with clear errors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
import msgspec.inspect
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from podium.api.spec import Param
from podium.errors import ApiError, bad_request, invalid, not_found

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
    except RecursionError:
        # msgspec recurses per nesting level: a small body can nest deeper than the stack.
        raise bad_request("request body nests too deeply") from None
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


_INTEGER = re.compile(r"^-?[0-9]{1,19}$")


class _Converter:
    """How one parameter type is read from text, built once per type."""

    __slots__ = ("decoder", "integer_only", "type")

    def __init__(self, type_: Any) -> None:
        self.type = type_
        # msgspec.convert would rebuild the type's validator on every call.
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(type_)
        self.integer_only = isinstance(msgspec.inspect.type_info(type_), msgspec.inspect.IntType)


# By the type's id: hashing an Annotated/Literal/union type costs more than the decoding.
# The entry keeps its type alive, so an id is never reused while it is here; the types
# are the routes' own (a fixed set).
_CONVERTERS: dict[int, _Converter] = {}


def _converter(type_: Any) -> _Converter:
    found = _CONVERTERS.get(id(type_))
    if found is None or found.type is not type_:
        found = _CONVERTERS[id(type_)] = _Converter(type_)
    return found


def convert_param(raw: str, param: Param) -> Any:
    """`raw` as `param.type`, strictly: "" and "3.0" are no integers; Meta bounds apply.

    Raises msgspec.ValidationError; a digit string is tried as an integer only after
    the text itself did not fit, so a str type keeps its digits.
    """
    converter = _converter(param.type)
    decoder = converter.decoder
    if converter.integer_only and _INTEGER.fullmatch(raw):
        return decoder.decode(str(int(raw)).encode())  # text would not fit: skip that try
    try:
        return decoder.decode(msgspec.json.encode(raw))
    except msgspec.ValidationError:
        if not _INTEGER.fullmatch(raw):
            raise
    return decoder.decode(str(int(raw)).encode())


def read_query(request: HTTPConnection, params: Mapping[str, Param]) -> dict[str, Any]:
    """Every documented query parameter, parsed as documented; 422 names the bad one.

    An empty value is not "absent", and a parameter given twice is refused: the
    document states one value of the parameter's type. Works on a WebSocket too.
    """
    out: dict[str, Any] = {}
    for name, param in params.items():
        values = request.query_params.getlist(name)
        if not values:
            if param.required:
                raise invalid(f"{name} is required", {name: "required"})
            out[name] = param.default
            continue
        if len(values) > 1:
            raise invalid(f"{name} is given more than once", {name: "give it once"})
        try:
            out[name] = convert_param(values[0], param)
        except msgspec.ValidationError as exc:
            raise invalid(f"{name} is invalid", {name: str(exc).partition(" - at ")[0]}) from None
    return out


def read_path(
    request: Request, params: Mapping[str, Param], creates: bool = False
) -> dict[str, Any]:
    """Every path parameter, parsed as documented; one that cannot exist is a 404.

    `user_id` -> "no such user", `game` -> "no such game": the same answer as for a
    well-formed id that names nothing, so no route treats a wild id differently.
    With `creates` (the path names what a PUT makes) a bad value is a 422 instead.
    """
    out: dict[str, Any] = {}
    for name, param in params.items():
        try:
            out[name] = convert_param(request.path_params[name], param)
        except msgspec.ValidationError as exc:
            if creates:
                detail = str(exc).partition(" - at ")[0]
                raise invalid(f"{name} is invalid", {name: detail}) from None
            raise not_found(f"no such {name.removesuffix('_id')}") from None
    return out
