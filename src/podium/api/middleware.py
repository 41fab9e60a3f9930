"""Pure-ASGI middleware: security headers, CORS allow-list, request ids, access logs."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
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
        request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers["x-request-id"] = request_id
                # Which process answered: several serve one port under --workers.
                headers.append(instance.HEADER, instance.current.id)
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
            HTTP_REQUESTS.labels(method, route_template(scope), str(status or 500)).inc()
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
