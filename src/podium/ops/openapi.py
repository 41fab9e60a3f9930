"""Build the OpenAPI 3.0 document from the app's routes and their `@spec` records.

Schemas come from `msgspec.json.schema_components` over the very types the handlers
decode and encode, so the document cannot drift from the code. Routes without a
record are left out and listed by `undocumented`, which the tests require be empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Mount, Route

import podium
from podium.api.spec import ErrorBody, Operation, Param, operation_of

REF_TEMPLATE = "#/components/schemas/{name}"
ERROR_REF = {"$ref": REF_TEMPLATE.format(name="ErrorBody")}
_CONVERTOR = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")

TAGS = {
    "auth": "Accounts and tokens: register, log in, refresh, log out.",
    "games": "Games, their rules and their action points.",
    "scores": "Score writes, durable before they are acknowledged.",
    "leaderboards": "Pages, ranks, neighbours and friends on any board and period.",
    "reports": "Top players of a date range.",
    "admin": "Operator actions.",
    "ops": "Health, readiness, metrics and this description.",
    "web": "The web page.",
}

ERROR_MEANINGS = {
    400: "The request is malformed (not JSON, wrong framing).",
    401: "Missing, invalid, expired or revoked credentials.",
    403: "Authenticated, but not allowed to do this.",
    404: "No such resource.",
    409: "Conflicts with the current state (taken name, reused event_id).",
    413: "The request body is too large.",
    422: "Well-formed but invalid input; `details` names each bad field.",
    429: "Rate limited; retry after the `Retry-After` seconds.",
    500: "Unexpected server error; no detail is given, the log has it.",
    503: "The system of record is unreachable; retry shortly.",
}


def iter_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    """Every HTTP route with its full path template, inside mounts too."""
    for route in routes:
        if isinstance(route, Mount):
            yield from iter_routes(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            yield prefix + route.path, route


def _methods(route: Route) -> list[str]:
    methods = sorted(route.methods or {"GET"})
    # Starlette adds HEAD to every GET; it is not a separate operation.
    return [m for m in methods if m != "HEAD" or methods == ["HEAD"]]


def undocumented(routes: Iterable[BaseRoute]) -> list[str]:
    """ "METHOD /path" of every HTTP route that has no `@spec` record."""
    return [
        f"{method} {path}"
        for path, route in iter_routes(routes)
        if operation_of(route.endpoint) is None
        for method in _methods(route)
    ]


class _Schemas:
    """Collects every type first, then builds all schemas in one call (shared refs)."""

    def __init__(self) -> None:
        self.types: list[Any] = [ErrorBody]
        self.index: dict[int, int] = {}

    def add(self, type_: Any) -> int:
        key = id(type_)
        if key not in self.index:
            self.index[key] = len(self.types)
            self.types.append(type_)
        return self.index[key]

    def build(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        schemas, components = msgspec.json.schema_components(self.types, ref_template=REF_TEMPLATE)
        # Rules across fields (e.g. exactly one of two) that a Struct states itself.
        for type_ in self.types:
            extra = getattr(type_, "__json_schema_extra__", None)
            if isinstance(extra, dict) and type_.__name__ in components:
                components[type_.__name__].update(extra)
        return list(schemas), components


def to_openapi30(node: Any) -> Any:
    """Rewrite msgspec's JSON Schema 2020-12 into the OpenAPI 3.0 dialect.

    The bundled Swagger UI (4.x) renders 3.0 documents only, so the document is 3.0.3:
    `null` members become `nullable`, `const` an `enum`, tuples an `items` union.
    """
    if isinstance(node, list):
        return [to_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_openapi30(v) for k, v in node.items()}
    for key in ("anyOf", "oneOf"):
        if key in out and {"type": "null"} in out[key]:
            rest = [item for item in out.pop(key) if item != {"type": "null"}]
            if len(rest) == 1 and "$ref" not in rest[0]:
                out.update(rest[0])
            elif len(rest) == 1:
                out["allOf"] = rest  # no siblings beside a $ref in 3.0
            else:
                out[key] = rest
            out["nullable"] = True
    if isinstance(out.get("type"), list):
        types = [t for t in out["type"] if t != "null"]
        if len(types) < len(out["type"]):
            out["nullable"] = True
        out["type"] = types[0] if len(types) == 1 else types
        if len(types) > 1:
            out["anyOf"] = [{"type": t} for t in out.pop("type")]
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "enum" in out and "type" not in out and all(isinstance(v, str) for v in out["enum"]):
        out["type"] = "string"
    if "prefixItems" in out:
        members: list[Any] = []
        for item in out.pop("prefixItems"):
            if item not in members:
                members.append(item)
        out["items"] = members[0] if len(members) == 1 else {"anyOf": members}
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        value = out.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out["minimum" if bound == "exclusiveMinimum" else "maximum"] = value
            out[bound] = True
    if out.pop("contentEncoding", None) == "base64":
        out["format"] = "byte"
    out.pop("contentMediaType", None)
    if "examples" in out:
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    return out


def _param(name: str, where: str, param: Param, schema: dict[str, Any]) -> dict[str, Any]:
    if param.default is not None:
        # No siblings beside a $ref in 3.0: wrap it.
        base = {"allOf": [schema]} if "$ref" in schema else schema
        schema = {**base, "default": msgspec.to_builtins(param.default)}
    out: dict[str, Any] = {
        "name": name,
        "in": where,
        "required": where == "path" or param.required,
        "schema": schema,
    }
    if param.description:
        out["description"] = param.description
    return out


def _error_statuses(op: Operation) -> list[int]:
    statuses = set(op.errors) | {500}
    if op.auth:
        statuses.add(401)
    if op.body is not None:
        statuses |= {400, 413, 422}
    return sorted(statuses)


def build(routes: Iterable[BaseRoute], title: str = "Podium") -> dict[str, Any]:
    """The OpenAPI document of `routes` (usually `app.routes`)."""
    found = [
        (path, method, route, op)
        for path, route in iter_routes(routes)
        if (op := operation_of(route.endpoint)) is not None
        for method in _methods(route)
    ]
    schemas = _Schemas()
    pending = []
    for path, method, route, op in found:
        names = _CONVERTOR.findall(path)
        refs: dict[str, Any] = {
            "body": schemas.add(op.body) if op.body is not None else None,
            "response": schemas.add(op.response) if op.response is not None else None,
            "alternatives": {m: schemas.add(t) for m, t in op.alternatives.items()},
            "query": {n: schemas.add(p.type) for n, p in op.query.items()},
            "path": {n: schemas.add(op.path.get(n, Param()).type) for n in names},
        }
        pending.append((path, method, route, op, refs))
    built, components = schemas.build()
    built, components = to_openapi30(built), to_openapi30(components)

    paths: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for path, method, route, op, refs in pending:
        template = _CONVERTOR.sub(r"{\1}", path)
        parameters = [
            _param(n, "path", op.path.get(n, Param()), built[i]) for n, i in refs["path"].items()
        ]
        parameters += [_param(n, "query", op.query[n], built[i]) for n, i in refs["query"].items()]
        content: dict[str, Any] = {}
        if refs["response"] is not None:
            content[op.media_type] = {"schema": built[refs["response"]]}
        for media, i in refs["alternatives"].items():
            content[media] = {"schema": built[i]}
        success: dict[str, Any] = {"description": HTTPStatus(op.status).phrase}
        if content:
            success["content"] = content
        responses: dict[str, Any] = {str(op.status): success}
        for status in _error_statuses(op):
            responses[str(status)] = {
                "description": ERROR_MEANINGS.get(status, HTTPStatus(status).phrase),
                "content": {"application/json": {"schema": ERROR_REF}},
            }
        operation_id = route.name if route.name not in used_ids else f"{route.name}_{method}"
        used_ids.add(operation_id)
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": responses,
        }
        if op.description:
            operation["description"] = op.description
        if parameters:
            operation["parameters"] = parameters
        if refs["body"] is not None:
            body: dict[str, Any] = {"schema": built[refs["body"]]}
            if op.body_example is not None:
                body["example"] = op.body_example
            operation["requestBody"] = {"required": True, "content": {"application/json": body}}
        operation["security"] = [{"bearer": []}] if op.auth else []
        paths.setdefault(template, {})[method.lower()] = operation

    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": podium.__version__,
            "description": (
                "Realtime leaderboards. HTTP API under `/api/v1`; live boards over "
                "WebSocket under `/ws/v1/` (see docs/protocol.md). Every error has the "
                'body `{"error": {"code", "message", "details"}}`. `OPTIONS` on any path '
                "answers 204 with an `Allow` header listing the path's methods, and a "
                "method the path lacks is 405 with the same `Allow`; a CORS preflight "
                "from an allowed origin gets the CORS headers instead."
            ),
        },
        # The API first, then the operators' and the page's routes.
        "paths": dict(sorted(paths.items(), key=lambda kv: (not kv[0].startswith("/api/"), kv[0]))),
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
