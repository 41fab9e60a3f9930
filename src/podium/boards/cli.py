"""`podium rebuild`: recreate every Redis board from the PostgreSQL log."""

from __future__ import annotations

import argparse
import asyncio

from podium.settings import Settings


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from podium.app import close_services, open_services
    from podium.boards.index import BoardIndex
    from podium.cli import CliError, resolved

    async def run(s: Settings) -> int:
        services = await open_services(s)
        try:
            index = BoardIndex(services.pool, services.redis, s.redis_prefix, s.retention_days)
            if not await index.rebuild():
                raise CliError("another rebuild is running; try again when it finishes")
            return index.last_count
        finally:
            await close_services(services)

    with resolved(settings, "cli") as ready:
        count = asyncio.run(run(ready))
    print(f"rebuilt {count} board(s) from the log")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    rebuild = sub.add_parser("rebuild", help="recreate every Redis board from the PostgreSQL log")
    rebuild.set_defaults(func=cmd_rebuild)
