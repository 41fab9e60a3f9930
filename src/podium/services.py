"""The process-wide resources a running Podium shares: settings, pools, issuers."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from podium.auth.tokens import TokenIssuer
from podium.clock import Clock
from podium.keys import Keys
from podium.settings import Settings


class Services:
    """Opened in the app lifespan, closed there; handlers reach it as `app.state.podium`."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.keys = Keys(settings.redis_prefix)
        self.clock = Clock()
        self.tokens = TokenIssuer(
            settings.secret_key,
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.access_token_ttl,
            settings.refresh_token_ttl,
        )
        # Hooks later layers register (e.g. realtime closes sockets of a revoked family).
        self.extras: dict[str, object] = {}
