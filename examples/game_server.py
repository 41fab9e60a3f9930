"""A game server: submit two players' scores, print the live top they make."""

import asyncio
import os

from podium.client import AsyncClient

env = os.environ


async def main() -> None:
    async with AsyncClient(env["PODIUM_URL"], service_token=env["PODIUM_SERVICE_TOKEN"]) as podium:
        board = podium.scoreboard(env["GAME"])
        print("snapshot", (await anext(board)).entries)  # subscribed: now write
        for player, score in ((env["PLAYER_A"], 1200), (env["PLAYER_B"], 900)):
            await podium.submit(env["GAME"], score, user_id=int(player))
        async for change in board:  # one diff or two, as the writes fall in ticks
            print(change.kind, [(row.username, row.rank, row.score) for row in change.upserts])
            if len(change.entries) == 2:
                break


asyncio.run(main())
