"""`@spec(...)`: what an HTTP endpoint takes and answers, for the OpenAPI document.

The decorator only records an `Operation` on the function; `podium.ops.openapi`
walks the app's routes and builds `/openapi.json` from these records and the msgspec
types they name (the same types the handlers decode and encode). A route without a
record fails the OpenAPI test, so none is forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import msgspec

F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE = "__podium_spec__"


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    details: Any = None


class ErrorBody(msgspec.Struct):
    """The one error body of every 4xx and 5xx response."""

    error: ErrorDetail


class Param(NamedTuple):
    """A query or path parameter: its type (anything msgspec can describe).

    The type carries the constraints (an `Annotated[..., msgspec.Meta(...)]` or a
    Literal): the document states them and `responses.read_query` enforces them.
    """

    type: Any = str
    description: str = ""
    required: bool = False
    default: Any = None


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    summary: str
    tag: str
    status: int = 200
    response: Any = None
    media_type: str = "application/json"
    # Other representations of the success response, e.g. {"text/csv": str}.
    alternatives: Mapping[str, Any] = {}
    body: Any = None
    body_example: Any = None
    query: Mapping[str, Param] = {}
    path: Mapping[str, Param] = {}
    auth: bool = False
    errors: tuple[int, ...] = ()
    description: str = ""


def spec(
    *,
    summary: str,
    tag: str,
    status: int = 200,
    response: Any = None,
    media_type: str = "application/json",
    alternatives: Mapping[str, Any] | None = None,
    body: Any = None,
    example: Any = None,
    query: Mapping[str, Param | Any] | None = None,
    path: Mapping[str, Param | Any] | None = None,
    auth: bool = False,
    errors: tuple[int, ...] = (),
    description: str = "",
) -> Callable[[F], F]:
    """Record how an endpoint is called. `auth` adds 401; a `body` adds 400/413/422."""

    def params(given: Mapping[str, Param | Any] | None) -> dict[str, Param]:
        return {k: v if isinstance(v, Param) else Param(v) for k, v in (given or {}).items()}

    operation = Operation(
        summary=summary,
        tag=tag,
        status=status,
        response=response,
        media_type=media_type,
        alternatives=dict(alternatives or {}),
        body=body,
        body_example=example,
        query=params(query),
        path=params(path),
        auth=auth,
        errors=errors,
        description=description,
    )

    def mark(func: F) -> F:
        setattr(func, ATTRIBUTE, operation)
        return func

    return mark


def operation_of(endpoint: object) -> Operation | None:
    return getattr(endpoint, ATTRIBUTE, None)


def shape(name: str, **fields: Any) -> type[msgspec.Struct]:
    """A named object type for a response a handler builds as a dict."""
    return msgspec.defstruct(name, list(fields.items()))
