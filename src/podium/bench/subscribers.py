"""Subscriber processes: N sockets over P processes, recording when each push arrives.

Two clients. `picows` (the default) parses frames in C on uvloop and calls one small
Python method per frame, which only looks the payload up in a per-process cache: every
socket of a board receives the same bytes for a push, so a process decodes each distinct
payload once. `websockets` is the earlier pure-Python client (a task per socket, a JSON
decode per frame), kept to measure the difference: at 10,000 subscribers it could not
read what the server sent, so it measured itself rather than the server.

Times are `time.monotonic()`, one clock for every process on the machine, so a write's
ack in the bench process and its arrival here compare.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import time
from bisect import bisect_left

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

_TEXT, _BINARY, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE
KINDS = ("picows", "websockets")
NO_SCORE = -(2**63)
_CACHE_LIMIT = 4096  # distinct payloads remembered per process (bounded memory)


def top_score(message: str | bytes) -> int | None:
    """The best score a push carries (snapshot entries, diff rows), if any."""
    data = json.loads(message)
    if not isinstance(data, dict):
        return None
    rows = data.get("entries") or data.get("upserts") or []
    scores = [r["score"] for r in rows if isinstance(r, dict) and "score" in r]
    return max(scores) if scores else None


class Arrivals:
    """One socket's pushes that raised its best score: scores rise, so a write's
    arrival is the first entry at or above its score (a push carries every lower one)."""

    __slots__ = ("best", "scores", "times")

    def __init__(self) -> None:
        self.best = NO_SCORE
        self.scores: list[int] = []
        self.times: list[float] = []

    def saw(self, score: int, now: float) -> None:
        if score > self.best:
            self.best = score
            self.scores.append(score)
            self.times.append(now)


class Totals:
    """What a subscriber process counts across its sockets."""

    __slots__ = ("connected", "frames")

    def __init__(self) -> None:
        self.connected = 0
        self.frames = 0


_scores: dict[bytes, int] = {}


def _score_of(payload: bytes) -> int:
    score = _scores.get(payload)
    if score is None:
        try:
            found = top_score(payload)
        except ValueError:
            found = None
        score = NO_SCORE if found is None else found
        if len(_scores) >= _CACHE_LIMIT:
            _scores.clear()
        _scores[payload] = score
    return score


def first_and_last(
    sockets: list[Arrivals], scores: list[int]
) -> tuple[list[float | None], list[float | None], int]:
    """Per write score: its first and last arrival over the sockets, and the number of
    (write, socket) pairs never seen."""
    first: list[float | None] = [None] * len(scores)
    last: list[float | None] = [None] * len(scores)
    missing = 0
    for sock in sockets:
        keys, times, n = sock.scores, sock.times, len(sock.scores)
        for i, score in enumerate(scores):
            j = bisect_left(keys, score)
            if j == n:
                missing += 1
                continue
            t = times[j]
            f = first[i]
            if f is None or t < f:
                first[i] = t
            x = last[i]
            if x is None or t > x:
                last[i] = t
    return first, last, missing


# --- picows ------------------------------------------------------------------------------


class _Listener(WSListener):
    """One picows socket: per frame, a cache lookup and, when the best score rises, an
    append; picows answers pings itself."""

    def __init__(self, arrivals: Arrivals, totals: Totals, gone: asyncio.Future[None]) -> None:
        super().__init__()
        self.arrivals = arrivals
        self.totals = totals
        self.gone = gone

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == _TEXT or kind == _BINARY:
            now = time.monotonic()
            self.totals.frames += 1
            score = _score_of(frame.get_payload_as_bytes())
            if score > self.arrivals.best:
                self.arrivals.saw(score, now)
        elif kind == _CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.gone.done():
            self.gone.set_result(None)


async def _picows_socket(
    url: str, headers: dict[str, str], arrivals: Arrivals, totals: Totals
) -> asyncio.Future[None]:
    """Connect one socket; returns a future that completes when it disconnects."""
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    await ws_connect(
        lambda: _Listener(arrivals, totals, gone),
        url,
        extra_headers=headers,
        websocket_handshake_timeout=60,
        max_frame_size=2**20,
    )
    return gone


# --- websockets (the earlier client) -----------------------------------------------------


async def _websockets_socket(
    url: str, headers: dict[str, str], arrivals: Arrivals, totals: Totals
) -> asyncio.Future[None]:
    from websockets.asyncio.client import connect

    ws = await connect(
        url,
        additional_headers=headers,
        compression=None,
        max_size=2**20,
        open_timeout=60,
        ping_interval=None,
    )

    async def read() -> None:
        async with ws:
            async for message in ws:
                now = time.monotonic()
                totals.frames += 1
                score = top_score(message)
                if score is not None:
                    arrivals.saw(score, now)

    return asyncio.ensure_future(read())


# --- the process -------------------------------------------------------------------------


async def _main(
    conn: mp.connection.Connection, urls: list[str], tokens: list[str | None], kind: str
) -> None:
    opener = _picows_socket if kind == "picows" else _websockets_socket
    totals = Totals()
    per_socket = [Arrivals() for _ in urls]
    lives: list[asyncio.Future[None]] = []
    failed = 0
    sem = asyncio.Semaphore(100)  # a bounded connect burst, like real clients arriving

    async def start(i: int) -> None:
        nonlocal failed
        async with sem:
            headers = {"Authorization": f"Bearer {tokens[i]}"} if tokens[i] else {}
            try:
                life = await asyncio.wait_for(opener(urls[i], headers, per_socket[i], totals), 60)
            except Exception:
                failed += 1
                return
            totals.connected += 1
            lives.append(life)

    await asyncio.gather(*(start(i) for i in range(len(urls))))
    cpu0, frames0 = time.process_time(), totals.frames
    conn.send(("ready", totals.connected, failed))
    loop = asyncio.get_running_loop()
    _, scores = await loop.run_in_executor(None, conn.recv)  # ("finish", scores)
    window_cpu, window_frames = time.process_time() - cpu0, totals.frames - frames0
    first, last, missing = first_and_last(per_socket, scores)
    # Sockets that ended before the finish (the server closed them), plus failed connects.
    dropped = failed + sum(1 for life in lives if life.done())
    conn.send(
        {
            "first": first,
            "last": last,
            "frames": totals.frames,
            "missing": missing,
            "cpu_s": time.process_time(),
            "dropped": dropped,
            "window_cpu_s": window_cpu,
            "window_frames": window_frames,
        }
    )
    for life in lives:
        life.cancel()


def subscriber_process(
    conn: mp.connection.Connection,
    urls: list[str],
    tokens: list[str | None],
    cpu: int | None,
    kind: str = "picows",
) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    if kind == "picows":
        import uvloop

        uvloop.run(_main(conn, urls, tokens, kind))
    else:
        asyncio.run(_main(conn, urls, tokens, kind))


class SubscriberPool:
    """N sockets over P processes; collects per-write first and last arrival times."""

    def __init__(
        self,
        urls: list[str],
        tokens: list[str | None],
        procs: int,
        cpu: int | None,
        kind: str = "picows",
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"subscriber kind must be one of {KINDS}")
        ctx = mp.get_context("spawn")
        self.pipes = []
        self.procs = []
        procs = max(1, min(procs, len(urls)))
        for p in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=subscriber_process,
                args=(child, urls[p::procs], tokens[p::procs], cpu, kind),
                daemon=True,
            )
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.kind = kind
        self.connected = 0
        self.failed = 0
        self.dropped = 0
        self.cpu_s = 0.0  # the processes' whole life, connects included
        self.window_cpu_s = 0.0  # between ready() and finish()
        self.window_frames = 0

    async def ready(self) -> None:
        loop = asyncio.get_running_loop()
        for pipe in self.pipes:
            _, ok, failed = await loop.run_in_executor(None, pipe.recv)
            self.connected += ok
            self.failed += failed

    @property
    def us_per_frame(self) -> float | None:
        """Subscriber CPU per frame received over the measured window."""
        if not self.window_frames:
            return None
        return round(self.window_cpu_s * 1e6 / self.window_frames, 2)

    async def finish(
        self, scores: list[int]
    ) -> tuple[list[float | None], list[float | None], int, int]:
        """Per write: first and last arrival; then frames received and pairs missing."""
        loop = asyncio.get_running_loop()
        for pipe in self.pipes:
            pipe.send(("finish", scores))
        first: list[float | None] = [None] * len(scores)
        last: list[float | None] = [None] * len(scores)
        frames = missing = 0
        self.cpu_s = self.window_cpu_s = 0.0
        self.dropped = self.window_frames = 0
        for pipe in self.pipes:
            r = await loop.run_in_executor(None, pipe.recv)
            self.dropped += r["dropped"]
            frames += r["frames"]
            missing += r["missing"]
            self.cpu_s += r["cpu_s"]
            self.window_cpu_s += r["window_cpu_s"]
            self.window_frames += r["window_frames"]
            for i, (f, x) in enumerate(zip(r["first"], r["last"], strict=True)):
                if f is not None and (first[i] is None or f < first[i]):
                    first[i] = f
                if x is not None and (last[i] is None or x > last[i]):
                    last[i] = x
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        return first, last, frames, missing
