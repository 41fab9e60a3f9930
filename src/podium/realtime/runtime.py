"""The realtime layer's runtime objects, typed: the broker and this process's hub."""

from __future__ import annotations

from podium.boards.runtime import Boards
from podium.realtime.broker import RedisBroker
from podium.realtime.hub import Hub
from podium.realtime.session_core import Limits
from podium.services import Services


class Realtime:
    """One per app, started after Boards (the hub reads boards) and stopped before it."""

    def __init__(self, services: Services, boards: Boards) -> None:
        settings = services.settings
        assert settings.redis_url, "store URLs must be resolved first"
        self.broker = RedisBroker(settings.redis_url, services.redis)
        limits = Limits(
            max_sockets_per_user=settings.ws_max_sockets_per_user,
            messages_per_second=float(settings.ws_messages_per_second),
            burst=max(40, 2 * settings.ws_messages_per_second),
            max_subscriptions=settings.ws_max_subscriptions,
        )
        self.hub = Hub(services, boards, self.broker, limits)

    async def start(self) -> None:
        self.broker.start()
        await self.hub.start()

    async def stop(self) -> None:
        """Close every socket with 1001 so clients reconnect to another instance."""
        await self.hub.stop()
