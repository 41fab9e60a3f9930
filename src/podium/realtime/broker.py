"""Cross-instance fan-out: the pub/sub interface between Podium processes.

Delivery guarantee: at most once, in publish order per channel, while connected.
Messages published while a subscriber is disconnected are lost; after every
reconnection `listen()` yields `RESYNC` so the consumer re-reads what it watches.

`RedisBroker` holds ONE pub/sub connection for the whole process (its own small
RESP client, so that reconnections are ours to see). `LocalBroker` is the in-process
version for a single instance and for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Protocol
from urllib.parse import unquote, urlparse

import redis.asyncio as aioredis

log = logging.getLogger("podium.broker")


class _Resync:
    def __repr__(self) -> str:
        return "RESYNC"


RESYNC = _Resync()
"""Yielded by `listen()` after a (re)connection: anything may have been missed."""

Event = tuple[str, bytes] | _Resync


class Broker(Protocol):
    generation: int
    """How many times the broker connected: RESYNC means "re-read what you loaded
    before the current generation"."""
    on_lost: Callable[[], None] | None
    """Called at once (not through the queue) when messages may go unheard: the
    connection dropped, or a backlog was dropped."""
    on_synced: Callable[[], None] | None
    """Called at once when every subscription is confirmed again (as RESYNC is queued)."""

    async def subscribe(self, channel: str) -> bool:
        """Count one local subscriber; the first one subscribes the channel.

        True when the subscription is in effect on the current connection (every
        later publish will arrive); False when it waits for a reconnection.
        """

    async def unsubscribe(self, channel: str) -> None:
        """Drop one local subscriber; the last one leaves the channel."""

    @property
    def up(self) -> bool:
        """Connected now: every publish to a subscribed channel reaches `listen()`."""
        ...

    async def publish(self, channel: str, data: bytes) -> None: ...

    def listen(self) -> AsyncIterator[Event]:
        """The single stream of (channel, data) messages and RESYNC events."""
        ...

    async def close(self) -> None: ...


class _Counts:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, channel: str) -> bool:
        n = self.counts.get(channel, 0)
        self.counts[channel] = n + 1
        return n == 0

    def remove(self, channel: str) -> bool:
        n = self.counts.get(channel, 0)
        if n <= 1:
            self.counts.pop(channel, None)
            return n == 1
        self.counts[channel] = n - 1
        return False


class LocalBroker:
    """In-process pub/sub: publish reaches this process's listener only."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._channels = _Counts()
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.generation = 1
        self.on_lost: Callable[[], None] | None = None
        self.on_synced: Callable[[], None] | None = None
        self._queue.put_nowait(RESYNC)

    async def subscribe(self, channel: str) -> bool:
        self._channels.add(channel)
        return True

    async def unsubscribe(self, channel: str) -> None:
        self._channels.remove(channel)

    @property
    def up(self) -> bool:
        return True

    @property
    def channels(self) -> set[str]:
        return set(self._channels.counts)

    async def publish(self, channel: str, data: bytes) -> None:
        if channel not in self._channels.counts:
            return
        try:
            self._queue.put_nowait((channel, data))
        except asyncio.QueueFull:
            # Like Redis dropping a subscriber that falls behind: lose, then resync.
            self._drain()
            self.generation += 1
            if self.on_lost is not None:
                self.on_lost()
            self._queue.put_nowait(RESYNC)
            if self.on_synced is not None:
                self.on_synced()

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def listen(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        self._drain()


class RespError(Exception):
    pass


async def _read_reply(reader: asyncio.StreamReader) -> object:
    """One RESP2 reply: the subset pub/sub uses (+ - : $ *)."""
    line = await reader.readuntil(b"\r\n")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body
    if kind == b"-":
        return RespError(body.decode(errors="replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = await reader.readexactly(size + 2)
        return data[:-2]
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [await _read_reply(reader) for _ in range(count)]
    raise ConnectionError(f"unexpected RESP reply {line[:20]!r}")


def _command(*parts: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class RedisBroker:
    """One Redis pub/sub connection per process, reconnected with backoff.

    `publish` goes through the regular client (`redis`); subscribing is ours.
    `subscribe` returns once Redis confirmed the subscription (or at once while
    disconnected: the reconnection subscribes it and yields RESYNC).
    """

    PING_EVERY = 5.0
    DEAD_AFTER = 15.0
    MAX_BACKLOG = 100_000

    def __init__(self, url: str, redis: aioredis.Redis, *, connect_timeout: float = 2.0) -> None:
        self.url = url
        self._redis = redis
        self._connect_timeout = connect_timeout
        self._channels = _Counts()
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, list[asyncio.Future[None]]] = {}
        self._owed: set[str] = set()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = asyncio.Event()
        self.generation = 0
        self.on_lost: Callable[[], None] | None = None
        self.on_synced: Callable[[], None] | None = None
        self.reconnects = 0

    @property
    def up(self) -> bool:
        return self.connected.is_set()

    @property
    def channels(self) -> set[str]:
        return set(self._channels.counts)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="podium-broker")

    async def subscribe(self, channel: str) -> bool:
        if not self._channels.add(channel):
            # Another local subscriber got there first; its caller waits for the
            # confirmation (the hub loads each board once).
            return self._writer is not None
        writer = self._writer
        if writer is None:
            return False
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(channel, []).append(done)
        try:
            writer.write(_command("SUBSCRIBE", channel))
            # A confirmed subscription means every later PUBLISH reaches us: the
            # caller can read the board now without missing a change in between.
            await asyncio.wait_for(asyncio.shield(done), 5.0)
        except (TimeoutError, ConnectionError, OSError):
            return False  # the reconnection subscribes it and yields RESYNC
        finally:
            waiters = self._pending.get(channel, [])
            if done in waiters:
                waiters.remove(done)
        return self._writer is writer

    async def unsubscribe(self, channel: str) -> None:
        if not self._channels.remove(channel):
            return
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(_command("UNSUBSCRIBE", channel))

    async def publish(self, channel: str, data: bytes) -> None:
        await self._redis.publish(channel, data)

    async def listen(self) -> AsyncIterator[Event]:
        self.start()
        while True:
            yield await self._queue.get()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._drop_writer()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        url = urlparse(self.url)
        host, port = url.hostname or "127.0.0.1", url.port or 6379
        tls = ssl.create_default_context() if url.scheme == "rediss" else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, limit=2**24), self._connect_timeout
        )
        if url.password:
            user = unquote(url.username) if url.username else None
            auth = (
                ("AUTH", user, unquote(url.password)) if user else ("AUTH", unquote(url.password))
            )
            writer.write(_command(*auth))
            reply = await asyncio.wait_for(_read_reply(reader), self._connect_timeout)
            if isinstance(reply, RespError):
                writer.close()
                raise ConnectionError(f"redis AUTH failed: {reply}")
        return reader, writer

    def _drop_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._lost()
        self.connected.clear()

    def _lost(self) -> None:
        if self.on_lost is not None:
            self.on_lost()

    def _resynced(self) -> None:
        self._queue.put_nowait(RESYNC)
        if self.on_synced is not None:
            self.on_synced()

    async def _run(self) -> None:
        delay = 0.05
        first = True
        while not self._closed:
            try:
                reader, writer = await self._open()
            except (OSError, ConnectionError, TimeoutError) as exc:
                log.warning("pubsub connect failed", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            self._writer = writer
            channels = list(self._channels.counts)
            # RESYNC goes out once Redis confirmed every subscription: a re-read after
            # that cannot miss a change.
            self._owed = set(channels)
            if channels:
                writer.write(_command("SUBSCRIBE", *channels))
            self.generation += 1
            self.connected.set()
            if not first:
                self.reconnects += 1
                log.info("pubsub reconnected", extra={"channels": len(channels)})
            first = False
            if not self._owed:
                self._resynced()
            try:
                await self._read_loop(reader, writer)
            except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
                if not self._closed:
                    log.warning("pubsub connection lost", extra={"error": type(exc).__name__})
            finally:
                self._drop_writer()

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        last_seen = loop.time()
        while True:
            try:
                reply = await asyncio.wait_for(_read_reply(reader), self.PING_EVERY)
            except TimeoutError:
                if loop.time() - last_seen > self.DEAD_AFTER:
                    raise ConnectionError("pubsub connection silent") from None
                # A half-open TCP connection never errors by itself: ask for a pong.
                writer.write(_command("PING"))
                continue
            last_seen = loop.time()
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == b"message" and len(reply) == 3:
                if self._queue.qsize() >= self.MAX_BACKLOG:
                    # The consumer stalled: drop the backlog and let it re-read instead.
                    while not self._queue.empty():
                        self._queue.get_nowait()
                    self._lost()
                    self._resynced()
                self._queue.put_nowait((reply[1].decode(), reply[2]))
            elif kind == b"subscribe":
                channel = reply[1].decode()
                for done in self._pending.pop(channel, []):
                    if not done.done():
                        done.set_result(None)
                if self._owed:
                    self._owed.discard(channel)
                    if not self._owed:
                        self._resynced()
