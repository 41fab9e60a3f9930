"""The boards layer's runtime objects, typed: built from Services, started by the app.

Reads and writes take it beside Services: the game cache, the Lua scripts, the board
index (`index.ready` says whether Redis may be trusted) and the group-commit writer.
"""

from __future__ import annotations

import asyncio

from redis.commands.core import AsyncScript

from podium.boards.index import BoardIndex
from podium.boards.model import GameCache
from podium.boards.scripts import Scripts, source
from podium.boards.sources import RANKS_LUA
from podium.boards.writer import Writer
from podium.services import Services


class Boards:
    """One per app; `start()` in the lifespan, `stop()` in its `finally`."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        self.games = GameCache(services.pool)
        self.scripts = Scripts(services.redis, settings.redis_prefix)
        self.index = BoardIndex(
            services.pool, services.redis, settings.redis_prefix, settings.retention_days
        )
        self.writer = Writer(services.pool, self.scripts, self.index, settings.retention_days)
        self.ranks_script: AsyncScript = services.redis.register_script(RANKS_LUA)
        self.page_script: AsyncScript = services.redis.register_script(source("page"))
        # Reports are costly scans: at most `report_concurrency` run at once.
        self.report_slots = asyncio.Semaphore(max(1, settings.report_concurrency))

    async def start(self) -> None:
        """Check (or rebuild) the Redis index, then open the writer."""
        await self.index.start()
        self.writer.start()
        self.services.rates.start()

    async def stop(self) -> None:
        """Drain the writer first: its last batches still apply to the index."""
        try:
            await self.writer.stop()
        finally:
            await self.services.rates.stop()
            await self.index.stop()
