"""Direct writes: the pre-built frame is what websockets would send, and it is used."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode

from podium.realtime.direct import HIGH_WATER, DirectSender, text_frame
from tests.boards_helpers import create_game, post_score
from tests.conftest import Account, RunningApp
from tests.ws_helpers import open_ws, recv


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frame_matches_websockets(size: int) -> None:
    text = ("é" * size)[:size] if size % 2 else "x" * size
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert text_frame(text) == expected


async def test_a_push_is_written_straight_to_the_transport(
    server: RunningApp,
    client: httpx.AsyncClient,
    admin: Account,
    player: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[bytes] = []
    write = DirectSender.write

    def counting(self: DirectSender, frame: bytes) -> bool:
        ok = write(self, frame)
        if ok:
            written.append(frame)
        return ok

    monkeypatch.setattr(DirectSender, "write", counting)
    game = (await create_game(client, admin))["id"]
    async with await open_ws(server, "scoreboard", player, game=game) as ws:
        assert (await recv(ws))["type"] == "snapshot"
        assert (await post_score(client, player, game, 50)).status_code == 200
        diff = await recv(ws)
        assert diff["type"] == "diff"
    assert written == [text_frame(json.dumps(diff, separators=(",", ":")))]


async def test_a_denied_handshake_is_not_an_error(
    server: RunningApp, player: Account, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(server, "scoreboard", player, game="nope")
    assert refused.value.response.status_code == 404
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing


def test_the_sender_writes_only_while_the_socket_is_open_and_keeping_up() -> None:
    transport = FakeTransport()
    assert not DirectSender().write(b"a")  # no connection yet
    sender = DirectSender(transport)
    assert not sender.write(b"a")  # not accepted yet
    sender.accepted = True
    assert sender.write(b"a")
    sender.paused = True
    assert not sender.write(b"b")
    sender.paused = False
    transport.buffered = HIGH_WATER + 1
    assert not sender.write(b"b")
    transport.buffered = 0
    transport.closing = True
    assert not sender.write(b"b")
    transport.closing = False
    sender.closed = True
    assert not sender.write(b"b")
    sender.closed = False
    sender.compressed = True
    assert not sender.write(b"b")
    assert transport.out == [b"a"]
