"""Revocation: a token family, a user or a service credential stops working everywhere.

PostgreSQL records it first (the system of record, and what the guards consult while
Redis is down); Redis then denies the access tokens still in circulation and announces
the subject on the revocations channel, so every instance closes its open sockets with
4003. A subject is a family id (hex) or a `Principal.credential`: `user:<id>` or
`service:<name>`.
"""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from podium.auth.denylist import USER_SUBJECT
from podium.errors import unavailable
from podium.keys import Keys
from podium.services import Services
from podium.store import users


async def announce(redis: aioredis.Redis, keys: Keys, subject: str) -> None:
    """Every instance closes the open sockets of `subject`."""
    await redis.publish(keys.revocations, subject)


def deny_ttl(access_ttl: int) -> int:
    # No access token outlives one lifetime from now; the margin covers a token that
    # was being issued while the revocation ran.
    return access_ttl + 60


async def deny_family(redis: aioredis.Redis, keys: Keys, family: str, access_ttl: int) -> None:
    """Every access token of the family stops working now, on every instance."""
    await redis.set(keys.deny_family(family), "1", ex=deny_ttl(access_ttl))
    await announce(redis, keys, family)


async def void_identity(services: Services, user_id: int) -> None:
    """A voided user: refresh tokens revoked, access tokens denied, sockets closed.

    Call it after the user is marked voided. A voided user gets no new token (login and
    refresh refuse voided accounts), so the denial lasts as long as the tokens already
    issued. With Redis down: 503, PostgreSQL holds the revocation, a retry finishes.
    """
    await users.revoke_user(services.pool, user_id)
    keys = services.keys
    ttl = deny_ttl(services.tokens.access_ttl)
    # Here first: this instance refuses the user's tokens before it answers, even if
    # Redis fails next; the others hear it on the channel.
    services.denylist.add(f"{USER_SUBJECT}{user_id}", ttl)
    try:
        await services.redis.set(keys.deny_user(user_id), "1", ex=ttl)
        await announce(services.redis, keys, f"user:{user_id}")
    except RedisError:
        raise unavailable("the user is voided, but not yet signed out everywhere; retry") from None


async def revoke_service(db: asyncpg.Pool, name: str) -> bool:
    """Mark a service credential revoked; False when no active one has that name.

    Every HTTP request checks the credential in PostgreSQL, so this alone refuses it
    there; `announce(..., f"service:{name}")` closes its open sockets.
    """
    done = await db.execute(
        "UPDATE service_credentials SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
        name,
    )
    return not done.endswith(" 0")


class RecentRevocations:
    """The subjects this instance heard revoked lately, with when (bounded).

    A socket authenticates, then prepares and registers with the hub; a revocation
    heard in between finds no socket to close. The endpoint asks here once the socket
    is registered: revoked since it authenticated means it closes at once.
    """

    def __init__(self, size: int = 10_000, keep: float = 120.0) -> None:
        self._heard: dict[str, float] = {}
        self._size = size
        self._keep = keep

    def add(self, subject: str, now: float) -> None:
        self._heard.pop(subject, None)
        self._heard[subject] = now
        # Oldest first (insertion order): drop what is too old or over the bound.
        while self._heard:
            oldest, when = next(iter(self._heard.items()))
            if len(self._heard) <= self._size and now - when <= self._keep:
                break
            del self._heard[oldest]

    def since(self, subjects: tuple[str, ...], moment: float) -> bool:
        """Whether any of `subjects` was revoked at or after `moment`."""
        return any(self._heard.get(s, -1.0) >= moment for s in subjects if s)
