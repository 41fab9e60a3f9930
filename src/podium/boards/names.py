"""Display names from a Redis hash (user id -> username), filled from PostgreSQL on miss."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from redis.exceptions import RedisError

from podium import metrics
from podium.services import Services
from podium.store.db import is_unavailable

log = logging.getLogger("podium.names")


async def usernames(services: Services, user_ids: Iterable[int]) -> dict[int, str]:
    """Names for `user_ids`; one HMGET, and one query for the misses only.

    With PostgreSQL unreachable the misses are left out (callers show `user{id}`): a
    read served from Redis keeps working while the system of record is down.
    """
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return {}
    names: dict[int, str] = {}
    redis_ok = True
    try:
        cached = await services.redis.hmget(services.keys.names, ids)
    except RedisError:
        metrics.REDIS_ERRORS.inc()
        redis_ok = False
        cached = [None] * len(ids)
    missing = []
    for uid, raw in zip(ids, cached, strict=True):
        if raw is None:
            missing.append(uid)
        else:
            names[uid] = raw.decode() if isinstance(raw, bytes) else raw
    if missing:
        try:
            rows = await services.pool.fetch(
                "SELECT id, username FROM users WHERE id = ANY($1::bigint[])", missing
            )
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            metrics.POSTGRES_ERRORS.inc()
            log.warning("names lookup skipped: postgres unavailable")
            return names  # PostgreSQL down: reads go on from Redis, misses unnamed
        found = {r["id"]: r["username"] for r in rows}
        names.update(found)
        if found and redis_ok:
            try:
                await services.redis.hset(services.keys.names, mapping=found)
            except RedisError:
                metrics.REDIS_ERRORS.inc()
                log.warning("names cache write failed")
    return names
