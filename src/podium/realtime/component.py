"""The realtime component: WebSocket routes, and the broker and hub in the lifespan."""

from __future__ import annotations

from podium.api.ws import routes
from podium.realtime.broker import RedisBroker
from podium.realtime.hub import Hub
from podium.realtime.session import Limits
from podium.services import Services

root_routes = routes


async def start(services: Services) -> None:
    assert services.settings.redis_url
    broker = RedisBroker(services.settings.redis_url, services.redis)
    broker.start()
    settings = services.settings
    limits = Limits(
        max_sockets_per_user=settings.ws_max_sockets_per_user,
        messages_per_second=float(settings.ws_messages_per_second),
        burst=max(40, 2 * settings.ws_messages_per_second),
        max_subscriptions=settings.ws_max_subscriptions,
    )
    hub = Hub(services, broker, limits)
    await hub.start()
    services.extras["realtime"] = hub


async def stop(services: Services) -> None:
    """Close every socket with 1001 so clients reconnect to another instance."""
    hub = services.extras.pop("realtime", None)
    if isinstance(hub, Hub):
        await hub.stop()
