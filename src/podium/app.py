"""create_app(settings): routes, error handlers and the lifespan that opens the stores.

Everything is wired here, by name: the route lists of the transport modules, and the
domain containers (Boards, then Realtime) started in order and stopped in reverse.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

import asyncpg
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from podium.api import admin, auth_device, games, health, leaderboards, reports, scores, ws
from podium.api import auth as auth_api
from podium.api.middleware import SecurityHeaders
from podium.api.podium import Podium
from podium.api.responses import JSON, error_response
from podium.boards.runtime import Boards
from podium.errors import ApiError, unavailable
from podium.ops import endpoints as ops
from podium.realtime.runtime import Realtime
from podium.services import Services
from podium.settings import Settings
from podium.store.db import create_pool, is_unavailable, migrate
from podium.web import page as web

log = logging.getLogger("podium")

# Under /api/v1.
API_ROUTES: list[BaseRoute] = [
    *auth_api.routes,
    *auth_device.routes,
    *games.routes,
    *scores.routes,
    *admin.routes,
    *leaderboards.routes,
    *reports.routes,
]
# Under /.
ROOT_ROUTES: list[BaseRoute] = [*health.routes, *ws.routes, *web.routes, *ops.routes]


class Part(Protocol):
    """A domain container the lifespan starts and stops."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class PathRoute(Route):
    """A Route that answers for its whole path, not only its own methods.

    One path is often several Routes (GET and POST /games); Starlette answers a method
    none of them has from the first one alone, so `Allow` missed the others. Here every
    Route of a path knows all of the path's methods: `OPTIONS` is 204 with that `Allow`
    and any other method is 405 with it. A CORS preflight never gets here: the
    CORSMiddleware answers it.
    """

    def __init__(self, route: Route, methods: set[str]) -> None:
        super().__init__(
            route.path,
            route.endpoint,
            methods=sorted(route.methods or ()),
            name=route.name,
            include_in_schema=route.include_in_schema,
        )
        self.allow = ", ".join(sorted(methods | {"OPTIONS"}))

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            if scope["method"] == "OPTIONS":
                response = Response(status_code=204, headers={"Allow": self.allow})
                await response(scope, receive, send)
                return
            raise HTTPException(405, headers={"Allow": self.allow})
        await super().handle(scope, receive, send)


def whole_paths(routes: list[BaseRoute]) -> list[BaseRoute]:
    """`routes` with each HTTP Route made a PathRoute that knows its path's methods."""
    methods: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, Route) and route.methods:
            methods.setdefault(route.path, set()).update(route.methods)
    return [
        PathRoute(route, methods[route.path])
        if isinstance(route, Route) and route.methods
        else route
        for route in routes
    ]


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = {404: "no such route", 405: "method not allowed"}.get(
        exc.status_code, str(exc.detail)
    )
    return JSON(
        {"error": {"code": code, "message": message, "details": None}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _store_error(request: Request, exc: Exception) -> Response:
    """PostgreSQL unreachable (down, restarting) under any route: 503, not a 500."""
    if not is_unavailable(exc):
        raise exc
    log.warning("store unavailable: %s", exc, extra={"path": request.url.path})
    return error_response(unavailable("a store is unavailable; try again shortly"))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return JSON(
        {"error": {"code": "internal", "message": "internal server error", "details": None}},
        status_code=500,
    )


async def open_services(settings: Settings, *, migrated: bool = False) -> Services:
    """Connect to PostgreSQL (migrating it, unless `migrated`) and Redis."""
    assert settings.database_url and settings.redis_url, "store URLs must be resolved first"
    pool = await create_pool(settings.database_url, schema=settings.db_schema)
    if not migrated:
        try:
            async with pool.acquire() as conn:
                await migrate(conn, settings.db_schema)
        except BaseException:
            await pool.close()
            raise
    # A bounded pool that waits for a free connection: the default pool raises
    # "Too many connections" under a burst, and a failed apply marks the index stale.
    redis_pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=64,
        timeout=5,
        decode_responses=False,
        health_check_interval=10,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry_on_timeout=False,
    )
    redis = aioredis.Redis.from_pool(redis_pool)
    return Services(settings, pool, redis)


async def close_services(services: Services) -> None:
    if services.external is not None:
        await services.external.jwks.close()
    with contextlib.suppress(Exception):
        await services.redis.aclose()
    with contextlib.suppress(Exception):
        await services.pool.close()


def create_app(
    settings: Settings, services: Services | None = None, *, migrated: bool = False
) -> Starlette:
    """The ASGI app. Without `services`, the lifespan opens them from `settings`
    (`migrated`: the schema is already current, as a `serve --workers` parent made it)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = services is None
        svc = services if services is not None else await open_services(settings, migrated=migrated)
        started: list[Part] = []
        try:
            boards = Boards(svc)
            realtime = Realtime(svc, boards)
            app.state.services = svc
            app.state.podium = Podium(svc, boards, realtime)
            # Boards first: the hub reads boards, and the writer outlives the sockets.
            for part in (boards, realtime):
                await part.start()
                started.append(part)
            yield
        finally:
            for running in reversed(started):
                try:
                    await running.stop()
                except Exception:
                    log.exception("stop failed", extra={"part": type(running).__name__})
            if own:
                await close_services(svc)

    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            max_age=600,
        ),
    ]
    routes = [
        *whole_paths(ROOT_ROUTES),
        Mount("/api/v1", routes=whole_paths(API_ROUTES)),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            # Reads and other paths that do not map store errors themselves.
            OSError: _store_error,
            asyncpg.PostgresError: _store_error,
            asyncpg.InterfaceError: _store_error,
            Exception: _internal_error,
        },
    )
