"""The process-wide resources a running Podium shares: settings, pools, issuers."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from starlette.requests import HTTPConnection

from podium.auth.denylist import Denylist
from podium.auth.external import ExternalIdentity
from podium.auth.jwks import JwksCache
from podium.auth.ratelimit import RateCounters
from podium.auth.tokens import TokenIssuer
from podium.clock import Clock
from podium.keys import Keys
from podium.settings import Settings


class Services:
    """Opened in the app lifespan, closed there; reached as `services_of(request)`."""

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
        # Fed by the realtime hub (the revocations channel); until then, or whenever
        # the channel is lost, the guards ask Redis.
        self.denylist = Denylist(self.keys, settings.denylist_size)
        # Bearer JWTs of an outside issuer, when one is configured (PODIUM_EXTERNAL_*).
        self.external = (
            ExternalIdentity(
                JwksCache(settings.external_jwks),
                settings.external_issuer,
                settings.external_audience,
                settings.external_name_claims,
                cache_ttl=settings.access_token_ttl,
            )
            if settings.external_jwks
            else None
        )
        # Started and stopped with Boards (the write path counts here).
        self.rates = RateCounters(
            redis, settings.rate_limit_keys, max(1, settings.rate_limit_sync_ms) / 1000
        )


def services_of(conn: HTTPConnection) -> Services:
    """What the app lifespan put at `app.state.services` (for the ground layer's guards;
    the transport reaches it through its Podium)."""
    services: Services = conn.app.state.services
    return services
