"""The boards layer as an app component: its routes and its runtime objects.

`services.extras` gets "games" (GameCache), "scripts" (Lua), "index" (BoardIndex:
`.ready` tells reads whether Redis may be trusted) and "writer" (group commit).
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from podium.api import admin, games, leaderboards, reports, scores
from podium.boards.index import BoardIndex
from podium.boards.model import GameCache
from podium.boards.scripts import Scripts
from podium.boards.writer import Writer
from podium.services import Services

api_routes: list[BaseRoute] = [
    *games.routes,
    *scores.routes,
    *admin.routes,
    *leaderboards.routes,
    *reports.routes,
]


async def start(services: Services) -> None:
    settings = services.settings
    scripts = Scripts(services.redis, settings.redis_prefix)
    index = BoardIndex(
        services.pool, services.redis, settings.redis_prefix, settings.retention_days
    )
    services.extras["games"] = GameCache(services.pool)
    services.extras["scripts"] = scripts
    services.extras["index"] = index
    await index.start()
    writer = Writer(services.pool, scripts, index, settings.retention_days)
    writer.start()
    services.extras["writer"] = writer


async def stop(services: Services) -> None:
    writer = services.extras.pop("writer", None)
    if isinstance(writer, Writer):
        await writer.stop()
    index = services.extras.get("index")
    if isinstance(index, BoardIndex):
        await index.stop()
