"""One home for Redis keys and one shape for the board-change message.

Every key and channel a short workload leaves in Redis matches a builder of
podium/keys.py (the Lua scripts build theirs from its layout), and what the Lua scripts
publish decodes, field for field, as protocol.BoardChange.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import httpx
import msgspec
import redis.asyncio as aioredis

from podium.boards.index import rebuild
from podium.boards.members import board_id
from podium.keys import Keys
from podium.periods import EPOCH
from podium.protocol import BoardChange
from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp, register_and_login
from tests.test_write_path import board_sub as board_sub  # the fixture
from tests.test_write_path import next_message
from tests.ws_helpers import open_ws, recv


class StrictBoardChange(BoardChange, forbid_unknown_fields=True):
    """BoardChange refusing any field it does not define: the Lua-built JSON must be it."""


strict = msgspec.json.Decoder(StrictBoardChange)


def redis_of(server: RunningApp) -> aioredis.Redis:
    assert server.services is not None
    return server.services.redis


async def next_change(sub: aioredis.client.PubSub) -> StrictBoardChange:
    return strict.decode((await next_message(sub))["data"])


def unmatched(keys: Keys, found: list[str]) -> list[str]:
    patterns = keys.patterns()
    return [k for k in found if not any(fnmatchcase(k, p) for p in patterns)]


async def test_every_key_of_a_workload_has_a_builder(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    assert server.services is not None
    settings, redis = server.settings, redis_of(server)
    keys = Keys(settings.redis_prefix)
    game = (await create_game(client, admin, operator="sum"))["id"]
    other = await register_and_login(client)
    async with await open_ws(server, "scoreboard", player, game=game) as ws:
        assert (await recv(ws))["type"] == "snapshot"
        channels = [c.decode() for c in await redis.pubsub_channels(f"{keys.prefix}*")]
        assert keys.channel(board_id(game, "all", EPOCH)) in channels
        assert keys.revocations in channels and unmatched(keys, channels) == []
        for who, score in ((player, 5), (other, 7), (player, 9)):
            assert (await post_score(client, who, game, score)).status_code == 200
    r = await client.post(f"/admin/users/{other.id}/void", headers=admin.headers)
    assert r.status_code == 200, r.text
    assert (await client.post("/auth/logout", headers=player.headers)).status_code in (200, 204)
    await rebuild(server.services.pool, redis, settings.redis_prefix, settings.retention_days)
    # A rebuild under way (another instance's lease): applies also write the boards aside.
    await redis.set(keys.rebuild_lock, "gen1", px=60_000)
    again = await register_and_login(client)
    assert (await post_score(client, again, game, 3)).status_code == 200
    found = [k.decode() async for k in redis.scan_iter(match=f"{keys.prefix}*", count=1000)]
    aside = keys.aside("gen1")
    assert aside.zset(board_id(game, "all", EPOCH)) in found
    assert aside.aside_boards in found
    assert keys.seq(board_id(game, "all", EPOCH)) in found
    assert unmatched(keys, found) == []
    await redis.delete(keys.rebuild_lock)


async def test_patterns_refuse_a_key_no_builder_makes(server: RunningApp) -> None:
    keys = Keys(server.settings.redis_prefix)
    assert unmatched(keys, [f"{keys.prefix}board:x", f"{keys.prefix}r:g:x:y"]) == [
        f"{keys.prefix}board:x",
        f"{keys.prefix}r:g:x:y",
    ]


async def test_lua_publishes_exactly_a_board_change(
    server: RunningApp,
    client: httpx.AsyncClient,
    admin: Account,
    player: Account,
    board_sub: aioredis.client.PubSub,
) -> None:
    assert server.services is not None
    settings = server.settings
    keys = Keys(settings.redis_prefix)
    game = (await create_game(client, admin, operator="sum"))["id"]
    board = board_id(game, "all", EPOCH)
    await board_sub.subscribe(keys.channel(board))
    assert (await post_score(client, player, game, 2**52)).status_code == 200
    change = await next_change(board_sub)
    assert change.board == board and change.seq >= 1 and change.ts > 0
    assert change.top == [(player.id, 2**52, change.top[0][2])]
    assert change.entered == [player.id] and change.changed == [player.id]
    assert change.left == [] and change.moved == [] and not change.resync
    # swap.lua's message after a rebuild is the same Struct, with `resync`.
    await rebuild(
        server.services.pool, redis_of(server), settings.redis_prefix, settings.retention_days
    )
    resync = await next_change(board_sub)
    assert resync.board == board and resync.resync and resync.seq == change.seq + 1
