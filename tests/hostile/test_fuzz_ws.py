"""Fuzz of the five WebSocket endpoints: messages drawn from the protocol Structs.

For each endpoint, hypothesis draws batches of client messages from the Structs'
own shapes (valid-shaped, one field mutated to a hostile value, an unknown field, a
required one missing) mixed with raw garbage (binary, invalid UTF-8, deep nesting,
wrong JSON types, junk text). Each batch goes to a socket that also holds an honest
subscription. Every reply must be a documented server message; the only close allowed
is 1007 after invalid UTF-8 (the WebSocket layer's own answer); after the batch the
honest subscription must still get its push. The server stays ready throughout.
CI draws a few batches per endpoint; PODIUM_FUZZ_EXAMPLES=500 draws many more.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from podium import protocol
from podium.errors import CLOSE_CODES, WS_BAD_UTF8, WS_TOO_BIG
from tests.boards_helpers import create_game, post_score
from tests.conftest import (
    Account,
    RunningApp,
    Stores,
    drop_test_state,
    make_admin,
    make_settings,
    register_and_login,
    running_app,
)
from tests.hostile.strategies import Frame, draw, frames_for
from tests.ws_helpers import open_ws, recv_until

EXAMPLES = int(os.environ.get("PODIUM_FUZZ_EXAMPLES", "8"))
HONEST_LIMIT = 7  # the honest page's limit; the fuzz never unsubscribes that key

# --- the server's side of the contract ----------------------------------------------------

_tagged = msgspec.json.Decoder(protocol.ServerMessage)
_SEED = (protocol.SeedPage, protocol.SeedReport)


def documented(raw: str | bytes) -> dict[str, Any]:
    """The message, after checking it is one the protocol documents."""
    assert isinstance(raw, str), f"binary frame from the server: {raw!r}"
    message = json.loads(raw)
    if isinstance(message, dict) and "type" in message:
        _tagged.decode(raw)
    else:
        for shape in _SEED:
            try:
                msgspec.json.decode(raw, type=shape)
                break
            except msgspec.ValidationError:
                continue
        else:
            raise AssertionError(f"undocumented message {raw[:300]}")
    if message.get("type") == "error":
        assert message["code"] != "internal", raw[:300]
    return message


async def _send(ws: ClientConnection, frame: Frame) -> None:
    kind, data = frame
    if kind == "raw-text":
        await ws.send(data, text=True)
    else:
        await ws.send(data)


class Target:
    """One endpoint: how to open it with an honest subscription, and prove it still works."""

    def __init__(
        self,
        path: str,
        kinds: tuple[type[msgspec.Struct], ...],
        opening: Callable[[], dict[str, Any]] | None = None,
        **params: object,
    ) -> None:
        self.path, self.kinds, self.opening, self.params = path, kinds, opening, params


async def _drain_until(ws: ClientConnection, pred: Callable[[dict[str, Any]], bool]) -> None:
    async with asyncio.timeout(10):
        while True:
            if pred(documented(await ws.recv())):
                return


async def test_every_endpoint_survives_fuzzed_messages(stores: Stores) -> None:
    settings_ = make_settings(
        stores,
        ws_messages_per_second=10_000,
        writes_per_second_per_user=100_000,
        writes_per_second_per_ip=100_000,
    )
    scores = itertools.count(1_000)
    async with running_app(settings_) as app:
        async with httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=20) as http:
            admin = await make_admin(app, http)
            player = await register_and_login(http)
            game = (await create_game(http, admin))["id"]
            await post_score(http, player, game, next(scores))
            known: dict[str, list[Any]] = {
                "game": [game, "global"],
                "channel": [game, "all"],
                "user_id": [player.id, admin.id],
                "event_id": [str(uuid.uuid4())],
            }
            honest_sub = f"{game}:all:0:{HONEST_LIMIT}"
            targets = [
                Target(
                    "scores",
                    (protocol.Subscribe, protocol.Unsubscribe, protocol.SeedPageRequest),
                    lambda: {"type": "subscribe", "game": game, "limit": HONEST_LIMIT},
                ),
                Target("scoreboard", (protocol.Ping, protocol.Auth), game=game),
                Target("my-score", (protocol.Ping, protocol.Auth), game=game),
                Target("add-score", (protocol.SubmitScore, protocol.Ping)),
                Target("reports", (protocol.ReportRequest, protocol.SeedReportRequest)),
            ]
            for target in targets:
                for batch in draw(frames_for(target.kinds, known), EXAMPLES):
                    await _one_batch(app, http, player, game, target, batch, honest_sub, scores)
                assert (await http.get(app.url + "/readyz")).status_code == 200
                # A frame over the size limit ends that socket alone, with 1009.
                async with await open_ws(app, target.path, player, **target.params) as ws:
                    await ws.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
                    await _closed_with(ws, WS_TOO_BIG.code)
    await drop_test_state(settings_)


async def _one_batch(
    app: RunningApp,
    http: httpx.AsyncClient,
    player: Account,
    game: str,
    target: Target,
    batch: list[Frame],
    honest_sub: str,
    scores: itertools.count[int],
) -> None:
    async with await open_ws(app, target.path, player, **target.params) as ws:
        if target.opening is not None:
            await ws.send(json.dumps(target.opening()))
            await recv_until(ws, lambda m: m.get("type") == "page" and m["sub"] == honest_sub)
        for frame in batch:
            if frame[0] == "text" and _is_honest_unsubscribe(frame[1], honest_sub):
                continue
            await _send(ws, frame)
            if frame[0] == "raw-text":
                # RFC 6455: the WebSocket layer closes a socket that sent invalid UTF-8.
                await _closed_with(ws, WS_BAD_UTF8.code)
                return
        where = f"{target.path} after {batch!r:.2000}"
        try:
            await ws.send(json.dumps({"type": "ping"}))
            await _drain_until(ws, lambda m: m.get("type") == "pong")
            await _prove_alive(http, ws, player, game, target, honest_sub, scores)
        except ConnectionClosed as exc:
            raise AssertionError(f"closed {exc.rcvd} {where}") from None
        except TimeoutError:
            raise AssertionError(f"no answer {where}") from None


def _is_honest_unsubscribe(text: str, honest_sub: str) -> bool:
    try:
        m = json.loads(text)
    except (ValueError, RecursionError):
        return False
    if not isinstance(m, dict) or m.get("type") != "unsubscribe":
        return False
    key = f"{m.get('game')}:{m.get('period', 'all')}:{m.get('offset', 0)}:{m.get('limit', 10)}"
    return key == honest_sub


async def _prove_alive(
    http: httpx.AsyncClient,
    ws: ClientConnection,
    player: Account,
    game: str,
    target: Target,
    honest_sub: str,
    scores: itertools.count[int],
) -> None:
    """The socket's honest work still happens after the fuzzed batch."""
    if target.path == "add-score":
        event = str(uuid.uuid4())
        message = {"type": "score", "game": game, "event_id": event, "score": next(scores)}
        await ws.send(json.dumps(message))
        await _drain_until(ws, lambda m: m.get("type") == "ack" and m["event_id"] == event)
        return
    if target.path == "reports":
        day = "2020-01-01"
        await ws.send(json.dumps({"type": "report", "start": day, "end": "2021-01-01"}))
        await _drain_until(ws, lambda m: m.get("type") == "report" and m["start"] == day)
        return
    score = next(scores)
    r = await post_score(http, player, game, score)
    assert r.status_code == 200, r.text
    await _drain_until(ws, lambda m: _pushes(target.path, m, score, honest_sub))


def _pushes(path: str, m: dict[str, Any], score: int, honest_sub: str) -> bool:
    """Whether `m` is the push that shows `score` on `path`'s honest subscription."""
    match path, m.get("type"):
        case "scores", "page":
            return m["sub"] == honest_sub and any(e["score"] == score for e in m["entries"])
        case "scoreboard", "diff" | "snapshot":
            rows = m.get("upserts", m.get("entries", []))
            return any(e["score"] == score for e in rows)
        case "my-score", "rank":
            return m["score"] == score
    return False


async def _closed_with(ws: ClientConnection, code: int) -> None:
    assert code in {c.code for c in CLOSE_CODES}
    try:
        async with asyncio.timeout(10):
            while True:
                documented(await ws.recv())
    except ConnectionClosed:
        pass
    assert ws.close_code == code, (ws.close_code, ws.close_reason)


async def test_each_out_of_shape_field_fails_its_message_alone(stores: Stores) -> None:
    """One message per bound of protocol.py; each is an `invalid` error, nothing else."""
    settings_ = make_settings(stores, ws_messages_per_second=10_000)
    async with running_app(settings_) as app:
        async with httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=20) as http:
            admin = await make_admin(app, http)
            player = await register_and_login(http)
            game = (await create_game(http, admin))["id"]
            event = str(uuid.uuid4())
            score = {"type": "score", "game": game, "event_id": event}
            cases = {
                "scores": [
                    {"type": "subscribe", "game": game, "offset": 2**63 - 1},
                    {"type": "subscribe", "game": game, "offset": 1_000_001},
                    {"type": "subscribe", "game": "A" * 1000},
                    {"type": "subscribe", "game": "a\x00b"},
                    {"type": "subscribe", "game": f"{game}\n"},
                    {"type": "subscribe", "game": game, "period": "year"},
                    {"type": "unsubscribe", "game": "x" * 5000},
                    {"channel": game, "start": 2**62, "end": 2**62 + 1},
                    {"channel": "Z" * 500, "start": 0, "end": 1},
                    {"type": "auth", "token": "t" * 10_000},
                ],
                "add-score": [
                    {**score, "score": 1, "user_id": 2**64},
                    {**score, "score": 1, "user_id": 0},
                    {**score, "score": 2**60},
                    {**score, "action": "a" * 65},
                    {**score, "action": "win", "ts": 2**70, "signature": "0" * 64},
                    {**score, "action": "win", "ts": 1, "signature": "zz"},
                    {**score, "event_id": "e" * 10_000, "score": 1},
                ],
                "reports": [
                    {"type": "report", "start": "2024-01-01", "end": "2024-02-01", "limit": 10**6},
                    {
                        "type": "report",
                        "start": "2024-01-01",
                        "end": "2024-02-01",
                        "game": "X" * 500,
                    },
                    {"start": "2" * 1000, "end": "2024-02-01"},
                    {"start": "2024-01-01", "end": "2024-02-01", "limit": 0},
                ],
            }
            for path, messages in cases.items():
                async with await open_ws(app, path, player) as ws:
                    if path == "scores":
                        await ws.send(json.dumps({"type": "subscribe", "game": game}))
                        await recv_until(ws, lambda m: m.get("type") == "page")
                    for message in messages:
                        await ws.send(json.dumps(message))
                        reply = documented(await asyncio.wait_for(ws.recv(), 10))
                        assert reply["type"] == "error", (path, message, reply)
                        assert reply["code"] == "invalid", (path, message, reply)
                    await ws.send(json.dumps({"type": "ping"}))
                    await _drain_until(ws, lambda m: m.get("type") == "pong")
            assert (await http.get(app.url + "/readyz")).status_code == 200
    await drop_test_state(settings_)
