"""podium.client against servers that misbehave: scripted HTTP and WebSocket servers on
real loopback sockets answer what Podium never would (or what it does only under
faults: 503, 429, a gap in the diffs), and the client must raise a clear error or
recover, never hang."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve

from podium.client import (
    ApiError,
    AsyncClient,
    Backoff,
    ProtocolError,
    SubscriptionClosed,
    Unavailable,
    live,
)

FAST = Backoff(base=0.02, cap=0.1)
SCORE_OUT = {
    "game": "chess",
    "user_id": 7,
    "score": 10,
    "delta": 10,
    "rank": 1,
    "previous_rank": None,
    "duplicate": False,
}


class Scripted:
    """An HTTP/1.1 server answering each request with the next canned reply."""

    def __init__(self, replies: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.replies = replies
        self.bodies: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                self.bodies.append(await reader.readexactly(length))
                status, headers, body = self.replies.pop(0)
                lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
                lines += [f"{k}: {v}" for k, v in headers.items()]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def scripted_http(
    replies: list[tuple[int, dict[str, str], bytes]],
) -> AsyncIterator[tuple[str, Scripted]]:
    script = Scripted(replies)
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", script
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def scripted_ws(
    handler: Callable[[ServerConnection], Awaitable[None]],
) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}"


def ok(body: object) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


async def test_a_503_and_a_429_are_retried_with_the_same_event_id() -> None:
    replies = [
        (503, {"Retry-After": "0"}, b'{"error": {"code": "unavailable", "message": "down"}}'),
        (429, {"Retry-After": "0"}, b'{"error": {"code": "rate_limited", "message": "slow"}}'),
        ok(SCORE_OUT),
    ]
    async with scripted_http(replies) as (url, script):
        async with AsyncClient(url, service_token="psk_x", backoff=FAST) as podium:
            out = await podium.submit("chess", 10, user_id=7)
    assert out.score == 10
    ids = {json.loads(body)["event_id"] for body in script.bodies}
    assert len(script.bodies) == 3 and len(ids) == 1
    uuid.UUID(ids.pop())  # made by the client


async def test_a_retry_after_too_long_is_not_waited_for() -> None:
    replies = [
        (429, {"Retry-After": "3600"}, b'{"error": {"code": "rate_limited", "message": "x"}}')
    ]
    async with scripted_http(replies) as (url, _):
        async with AsyncClient(url, service_token="psk_x", backoff=FAST) as podium:
            with pytest.raises(ApiError) as raised:
                await podium.games()
    assert raised.value.status == 429


async def test_503_forever_ends_in_unavailable() -> None:
    replies = [(503, {}, b'{"error": {"code": "unavailable", "message": "down"}}')] * 4
    async with scripted_http(replies) as (url, script):
        async with AsyncClient(url, service_token="psk_x", backoff=FAST, retries=3) as podium:
            with pytest.raises(Unavailable):
                await podium.submit("chess", 1, user_id=7)
    assert len(script.bodies) == 4


@pytest.mark.parametrize(
    "reply",
    [
        ok("not an object"),
        (200, {}, b"<html>not json</html>"),
        (200, {}, b"[" * 100_000),
        ok({**SCORE_OUT, "score": "ten"}),
        (404, {}, b"<html>nginx</html>"),
    ],
)
async def test_a_reply_that_is_not_podiums_is_a_protocol_error(
    reply: tuple[int, dict[str, str], bytes],
) -> None:
    async with scripted_http([reply]) as (url, _):
        async with AsyncClient(url, service_token="psk_x", backoff=FAST) as podium:
            with pytest.raises(ProtocolError):
                async with asyncio.timeout(5):
                    await podium.submit("chess", 1, user_id=7)


async def test_a_frame_that_is_not_json_ends_the_iterator() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("this is not json")
        await ws.wait_closed()

    async with scripted_ws(handler) as url, AsyncClient(url, token="t", backoff=FAST) as podium:
        with pytest.raises(ProtocolError, match="not a Podium message"):
            async with asyncio.timeout(5):
                await anext(podium.scoreboard("chess"))


async def test_a_handshake_answer_that_is_not_http_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with AsyncClient(url, token="t", backoff=FAST) as podium:
            with pytest.raises(ProtocolError):
                async with asyncio.timeout(5):
                    await anext(podium.scoreboard("chess"))
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("code", [1008, 1007, 4003, 4030])
async def test_final_close_codes_end_the_iterator(code: int) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.close(code, "go away")

    async with scripted_ws(handler) as url, AsyncClient(url, token="t", backoff=FAST) as podium:
        with pytest.raises(SubscriptionClosed) as closed:
            async with asyncio.timeout(5):
                await anext(podium.scoreboard("chess"))
    assert closed.value.code == code


def row(user: int, rank: int, score: int) -> dict[str, object]:
    return {"rank": rank, "user_id": user, "username": f"p{user}", "score": score}


def snapshot(seq: int, *rows: dict[str, object]) -> str:
    return json.dumps(
        {
            "type": "snapshot",
            "board": "chess:all:1970-01-01",
            "game": "chess",
            "period": "all",
            "period_start": "1970-01-01",
            "seq": seq,
            "entries": list(rows),
        }
    )


def diff(prev: int, seq: int, upserts: list[dict[str, object]], left: list[int]) -> str:
    return json.dumps(
        {
            "type": "diff",
            "board": "chess:all:1970-01-01",
            "seq": seq,
            "prev_seq": prev,
            "upserts": upserts,
            "left": left,
        }
    )


async def test_a_gap_resyncs_with_since_and_a_drop_resumes() -> None:
    seen: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append(ws.request.path)
        if len(seen) == 1:
            await ws.send(snapshot(3, row(1, 1, 50)))
            await ws.send(diff(3, 4, [row(2, 1, 60), row(1, 2, 50)], []))
            await ws.send(diff(7, 8, [row(3, 1, 99)], [1]))  # 5..7 missed: a gap
            await ws.wait_closed()
        elif len(seen) == 2:
            await ws.send(snapshot(8, row(3, 1, 99), row(2, 2, 60)))
            await ws.close(1012)  # a restart: come back with since
        else:
            await ws.send(json.dumps({"type": "synced", "board": "b", "seq": 8}))
            await ws.send(diff(8, 9, [row(2, 1, 100), row(3, 2, 99)], []))
            await ws.wait_closed()

    async with scripted_ws(handler) as url, AsyncClient(url, token="t", backoff=FAST) as podium:
        board = podium.scoreboard("chess")
        async with asyncio.timeout(10):
            updates = [await anext(board) for _ in range(4)]
        await board.aclose()
    assert [u.kind for u in updates] == ["snapshot", "diff", "snapshot", "diff"]
    assert [(r.user_id, r.rank) for r in updates[1].entries] == [(2, 1), (1, 2)]
    assert [(r.user_id, r.score) for r in updates[3].entries] == [(2, 100), (3, 99)]
    assert "since=4" in seen[1] and "since=8" in seen[2] and "since" not in seen[0]


class Tokens:
    """The client's side of credentials: numbered tokens, renewed on demand."""

    def __init__(self) -> None:
        self.current = "token-1"
        self.renewed: list[str] = []

    async def token(self) -> str:
        return self.current

    async def renew(self, used: str) -> None:
        self.renewed.append(used)
        self.current = f"token-{len(self.renewed) + 1}"

    def can_renew(self) -> bool:
        return True


async def test_4001_renews_the_token_then_reconnects() -> None:
    seen: list[str | None] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append(ws.request.headers.get("Authorization"))
        if len(seen) == 1:
            await ws.send(snapshot(1))
            await ws.close(4001, "token expired")
        else:
            await ws.send(snapshot(2, row(1, 1, 5)))
            await ws.wait_closed()

    tokens = Tokens()
    async with scripted_ws(handler) as url:
        link = live.Link(tokens, "ws" + url.removeprefix("http"), FAST, 5)
        async with live.scoreboard(link, "chess", "all") as board, asyncio.timeout(10):
            assert (await anext(board)).seq == 1
            assert (await anext(board)).seq == 2
    assert tokens.renewed == ["token-1"]
    assert seen == ["Bearer token-1", "Bearer token-2"]


async def test_closing_the_client_ends_a_reader_that_waits() -> None:
    closed = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(snapshot(1))
        await ws.wait_closed()
        closed.set()

    async with scripted_ws(handler) as url:
        podium = AsyncClient(url, token="t", backoff=FAST)
        board = podium.scoreboard("chess")
        async with asyncio.timeout(10):
            await anext(board)
            waiting = asyncio.create_task(anext(board))
            await asyncio.sleep(0)  # let it start waiting on the socket
            await podium.aclose()
            with pytest.raises((asyncio.CancelledError, StopAsyncIteration)):
                await waiting
            await closed.wait()  # and the socket was closed, not left open
