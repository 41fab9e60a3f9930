"""Pure-ASGI middleware: security headers, CORS allow-list, request ids, access logs."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from typing import Any

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from podium import instance
from podium.metrics import HTTP_REQUESTS

log = logging.getLogger("podium.http")

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The matched route's path template (e.g. `/api/v1/games/{game}`), for a metric label.

    Never the raw path: ids in paths would make a new time series per id.
    """
    route = scope.get("route")
    # A Mount left here means nothing inside it matched (a 404).
    if route is None or isinstance(route, Mount):
        return "unmatched"
    path: str = route.path
    mount: str = scope.get("root_path", "")[len(scope.get("app_root_path", "")) :]
    return mount + path


# connect-src 'self' also admits ws:/wss: to this same host (CSP Level 3), which is all
# the page needs; a bare `ws:` would let a script talk to any host.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
}


# As they go on the wire, built once: a response that set one of them keeps its own.
_SECURITY_RAW = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]

# A request id the client sent is kept when it is short and plain (it goes into the
# logs and back into a header); otherwise ours: a per-process random prefix and a
# counter, unique without a call to the OS random source per request.
_REQUEST_ID_OK = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_ID_PREFIX = secrets.token_hex(4)
_next_id = itertools.count(1).__next__


def _request_id(scope: Scope) -> str:
    value: bytes
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _REQUEST_ID_OK.fullmatch(value):
                return value.decode("ascii")
            break
    return f"{_ID_PREFIX}{_next_id():08x}"


# One metric child per (method, route template, status): a bounded set (known
# methods, route templates, statuses), looked up once instead of per request.
_REQUEST_COUNTERS: dict[tuple[str, str, int], Any] = {}


def _count_request(method: str, route: str, status: int) -> None:
    key = (method, route, status)
    counter = _REQUEST_COUNTERS.get(key)
    if counter is None:
        counter = _REQUEST_COUNTERS[key] = HTTP_REQUESTS.labels(method, route, str(status))
    counter.inc()


# No detail, ever: the log line (with the request id) holds the traceback.
INTERNAL_ERROR_BODY = (
    b'{"error":{"code":"internal","message":"internal server error","details":null}}'
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                raw = list(message.get("headers", ()))
                present = {name.lower() for name, _ in raw}
                if b"x-request-id" in present:
                    raw = [pair for pair in raw if pair[0].lower() != b"x-request-id"]
                raw += [pair for pair in _SECURITY_RAW if pair[0] not in present]
                raw.append((b"x-request-id", request_id.encode("ascii")))
                # Which process answered: several serve one port under --workers.
                raw.append(instance.current.header)
                message["headers"] = raw
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Answered here rather than by Starlette's outermost error middleware, so
            # a 500 carries the security headers and request id like any response.
            log.exception(
                "unhandled error", extra={"request_id": request_id, "path": scope["path"]}
            )
            if status:
                raise  # the response already started: the server drops the connection
            await send_wrapper(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(INTERNAL_ERROR_BODY)).encode()),
                    ],
                }
            )
            await send_wrapper({"type": "http.response.body", "body": INTERNAL_ERROR_BODY})
        finally:
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            _count_request(method, route_template(scope), status or 500)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round((time.perf_counter() - start) * 1000, 2),
                    },
                )
