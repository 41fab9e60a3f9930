"""Display names from a Redis hash (user id -> username), filled from PostgreSQL on miss."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import msgspec
from redis.exceptions import RedisError

from podium import metrics
from podium.protocol import NameChange
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
    for uid, raw in zip(ids, cached, strict=True):
        if raw is not None:
            names[uid] = raw.decode() if isinstance(raw, bytes) else raw
    return await fill_missing(services, names, ids, cache=redis_ok)


async def fill_missing(
    services: Services, names: dict[int, str], user_ids: Iterable[int], *, cache: bool = True
) -> dict[int, str]:
    """`names` completed from PostgreSQL for the ids it lacks (and cached in Redis).

    With PostgreSQL unreachable the misses are left out (callers show `user{id}`).
    """
    missing = [uid for uid in user_ids if uid not in names]
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
        if found and cache:
            try:
                await services.redis.hset(services.keys.names, mapping=found)
            except RedisError:
                metrics.REDIS_ERRORS.inc()
                log.warning("names cache write failed")
    return names


async def renamed(services: Services, user_id: int, username: str) -> None:
    """A user's display name changed (its users row already says so): update the cache
    and tell every instance's hub, whose windows serve top pages from memory."""
    await services.redis.hset(services.keys.names, str(user_id), username)
    message = msgspec.json.encode(NameChange(user_id=user_id, username=username))
    await services.redis.publish(services.keys.renames, message)
