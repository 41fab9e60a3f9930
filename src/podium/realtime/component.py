"""The realtime component: WebSocket routes, and the broker and hub in the lifespan."""

from __future__ import annotations

from podium.api.ws import routes
from podium.realtime.broker import RedisBroker
from podium.realtime.hub import Hub
from podium.services import Services

root_routes = routes


async def start(services: Services) -> None:
    assert services.settings.redis_url
    broker = RedisBroker(services.settings.redis_url, services.redis)
    broker.start()
    hub = Hub(services, broker)
    await hub.start()
    services.extras["realtime"] = hub


async def stop(services: Services) -> None:
    """Close every socket with 1001 so clients reconnect to another instance."""
    hub = services.extras.pop("realtime", None)
    if isinstance(hub, Hub):
        await hub.stop()
