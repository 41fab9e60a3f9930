"""/healthz (process up) and /readyz (Redis and PostgreSQL answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium import instance
from podium.api.podium import podium_of
from podium.api.responses import JSON
from podium.api.spec import shape, spec


@spec(
    summary="Liveness: the process answers, and which one it is",
    tag="ops",
    response=shape("Health", status=str, instance=str, pid=int, worker=int | None),
    description="`instance` is also in every response's `x-podium-instance` header;"
    " `worker` is this process's index under `podium serve --workers N`, else null.",
)
async def healthz(request: Request) -> Response:
    me = instance.current
    return JSON({"status": "ok", "instance": me.id, "pid": me.pid, "worker": me.worker})


async def _check(coro: Awaitable[object], timeout: float = 2.0) -> str | None:
    try:
        await asyncio.wait_for(coro, timeout)
    except Exception as exc:  # any failure means "not ready", never a 500
        return type(exc).__name__
    return None


@spec(
    summary="Readiness: Redis and PostgreSQL answer",
    tag="ops",
    response=shape("Ready", status=str, checks=dict[str, str]),
    errors=(503,),
)
async def readyz(request: Request) -> Response:
    services = podium_of(request).services
    redis_err, pg_err = await asyncio.gather(
        _check(services.redis.ping()), _check(services.pool.fetchval("SELECT 1"))
    )
    checks = {"redis": redis_err or "ok", "postgres": pg_err or "ok"}
    if redis_err or pg_err:
        down = [name for name, err in (("redis", redis_err), ("postgres", pg_err)) if err]
        body = {
            "error": {
                "code": "not_ready",
                "message": f"not ready: {', '.join(down)} unreachable",
                "details": checks,
            }
        }
        return JSON(body, status_code=503)
    return JSON({"status": "ready", "checks": checks})


routes = [Route("/healthz", healthz), Route("/readyz", readyz)]
