"""Load clients: score writers (WebSocket and raw HTTP/1.1) and subscriber processes.

Times are `time.monotonic()`, one clock for every process on the machine, so a
write's ack in this process and its arrival in a subscriber process compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
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


# --- subscribers, in their own processes ------------------------------------------------


def top_score(message: str | bytes) -> int | None:
    """The best score a push carries (snapshot entries, diff rows), if any."""
    data = json.loads(message)
    rows = data.get("entries") or data.get("upserts") or []
    scores = [r["score"] for r in rows if isinstance(r, dict) and "score" in r]
    return max(scores) if scores else None


async def _subscriber(
    url: str,
    headers: dict[str, str],
    arrivals: list[tuple[int, float]],
    connected: asyncio.Event,
    counter: list[int],
) -> None:
    best = -(2**63)
    async with connect(
        url,
        additional_headers=headers,
        compression=None,
        max_size=2**20,
        open_timeout=60,
        ping_interval=None,
    ) as ws:
        counter[0] += 1
        connected.set()
        async for message in ws:
            now = time.monotonic()
            counter[2] += 1
            score = top_score(message)
            if score is not None and score > best:
                best = score
                arrivals.append((score, now))


def _arrival_of(arrivals: list[tuple[int, float]], score: int) -> float | None:
    for seen, t in arrivals:
        if seen >= score:
            return t
    return None


async def _subscriber_main(
    conn: mp.connection.Connection, urls: list[str], tokens: list[str | None]
) -> None:
    counter = [0, 0, 0]
    per_socket: list[list[tuple[int, float]]] = [[] for _ in urls]
    tasks: list[asyncio.Task[None]] = []
    sem = asyncio.Semaphore(100)  # a bounded connect burst, like real clients arriving

    async def start(i: int) -> None:
        async with sem:
            headers = {"Authorization": f"Bearer {tokens[i]}"} if tokens[i] else {}
            connected = asyncio.Event()
            task = asyncio.create_task(
                _subscriber(urls[i], headers, per_socket[i], connected, counter)
            )
            tasks.append(task)
            waiter = asyncio.ensure_future(connected.wait())
            await asyncio.wait({waiter, task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    await asyncio.gather(*(start(i) for i in range(len(urls))))
    failed = sum(1 for t in tasks if t.done())
    conn.send(("ready", counter[0], failed))
    loop = asyncio.get_running_loop()
    command = await loop.run_in_executor(None, conn.recv)  # ("finish", scores) after writes
    _, scores = command
    first: list[float | None] = []
    last: list[float | None] = []
    missing = 0
    for score in scores:
        times = [_arrival_of(a, score) for a in per_socket]
        got = [t for t in times if t is not None]
        missing += len(times) - len(got)
        first.append(min(got) if got else None)
        last.append(max(got) if got else None)
    # Sockets that ended before the finish: the server closed them (or they failed).
    dropped = sum(1 for t in tasks if t.done())
    conn.send(("result", first, last, counter[2], missing, time.process_time(), dropped))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def subscriber_process(
    conn: mp.connection.Connection, urls: list[str], tokens: list[str | None], cpu: int | None
) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_subscriber_main(conn, urls, tokens))


class SubscriberPool:
    """N sockets over P processes; collects per-write first and last arrival times."""

    def __init__(self, urls: list[str], tokens: list[str | None], procs: int, cpu: int | None):
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        procs = max(1, min(procs, len(urls)))
        for p in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=subscriber_process,
                args=(child, urls[p::procs], tokens[p::procs], cpu),
                daemon=True,
            )
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.connected = 0
        self.failed = 0
        self.dropped = 0
        self.cpu_s = 0.0

    async def ready(self) -> None:
        loop = asyncio.get_running_loop()
        for pipe in self.pipes:
            _, ok, failed = await loop.run_in_executor(None, pipe.recv)
            self.connected += ok
            self.failed += failed

    async def finish(
        self, scores: list[int]
    ) -> tuple[list[float | None], list[float | None], int, int]:
        loop = asyncio.get_running_loop()
        for pipe in self.pipes:
            pipe.send(("finish", scores))
        first: list[float | None] = [None] * len(scores)
        last: list[float | None] = [None] * len(scores)
        pushes = missing = 0
        self.cpu_s = 0.0
        self.dropped = 0
        for pipe in self.pipes:
            _, f, l_, n, miss, cpu, dropped = await loop.run_in_executor(None, pipe.recv)
            self.dropped += dropped
            pushes += n
            missing += miss
            self.cpu_s += cpu
            for i in range(len(scores)):
                if f[i] is not None and (first[i] is None or f[i] < first[i]):
                    first[i] = f[i]
                if l_[i] is not None and (last[i] is None or l_[i] > last[i]):
                    last[i] = l_[i]
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        return first, last, pushes, missing
