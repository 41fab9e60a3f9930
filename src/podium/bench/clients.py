"""Load clients: score writers (WebSocket and raw HTTP/1.1); subscribers are in subscribers.py.

Times are `time.monotonic()`, one clock for every process on the machine, so a
write's ack in this process and its arrival in a subscriber process compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import connect


@dataclass
class WriteLog:
    """What the writers did: ack latency, and (score, ack time) of each accepted write."""

    latencies: list[float] = field(default_factory=list)
    acked: list[tuple[int, float]] = field(default_factory=list)
    errors: int = 0
    started: float = 0.0
    ended: float = 0.0

    @property
    def rate(self) -> float:
        span = self.ended - self.started
        return len(self.latencies) / span if span > 0 else 0.0


class RawHttp:
    """A keep-alive HTTP/1.1 client on one connection: httpx would cost more CPU than
    the server under test, and then the client, not Podium, would be measured."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        return await self.request("POST", path, body, headers)

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        return await self.request("GET", path, b"", headers)

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        assert self.reader and self.writer
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length) if length else b""

    async def close(self) -> None:
        if self.writer:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


ScoreFn = Callable[[], int]


class Pacer:
    """Spaces sends `interval` seconds apart (0: flat out); a late send goes at once."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        self.next_at += self.interval
        delay = self.next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def ws_writer(
    ws_url: str,
    token: str,
    game: str,
    next_score: ScoreFn,
    log: WriteLog,
    until: float,
    pace: float = 0.0,
) -> None:
    """Submit scores over `add-score` until `until`, each acked before the next."""
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(
        f"{ws_url}/ws/v1/add-score", additional_headers=headers, compression=None, max_size=2**20
    ) as ws:
        pacer = Pacer(pace)
        while time.monotonic() < until:
            await pacer.wait()
            score = next_score()
            msg = {"type": "score", "game": game, "event_id": str(uuid.uuid4()), "score": score}
            sent = time.monotonic()
            await ws.send(json.dumps(msg))
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("type") in ("ack", "error"):
                    break
            now = time.monotonic()
            if reply["type"] == "ack":
                log.latencies.append(now - sent)
                log.acked.append((score, now))
            else:
                log.errors += 1


async def http_writer(
    url: str, token: str, game: str, next_score: ScoreFn, log: WriteLog, until: float
) -> None:
    client = RawHttp(url)
    await client.open()
    headers = {"Authorization": f"Bearer {token}"}
    try:
        while time.monotonic() < until:
            score = next_score()
            body = json.dumps({"game": game, "event_id": str(uuid.uuid4()), "score": score})
            sent = time.monotonic()
            status, _ = await client.post("/api/v1/scores", body.encode(), headers)
            now = time.monotonic()
            if status == 200:
                log.latencies.append(now - sent)
                log.acked.append((score, now))
            else:
                log.errors += 1
    finally:
        await client.close()


async def floor_writer(
    ws_url: str,
    next_score: ScoreFn,
    log: WriteLog,
    until: float,
    pace: float,
    payload: dict[str, Any],
) -> None:
    """Publish to the floor server: the same payload shape as a Podium diff."""
    async with connect(f"{ws_url}/publish", compression=None) as ws:
        pacer = Pacer(pace)
        while time.monotonic() < until:
            await pacer.wait()
            score = next_score()
            payload["upserts"][0]["score"] = score
            sent = time.monotonic()
            await ws.send(json.dumps(payload))
            await ws.recv()
            now = time.monotonic()
            log.latencies.append(now - sent)
            log.acked.append((score, now))
