"""The workloads: writes, fanout, reads, memory, cluster (and fanout against the floor)."""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from typing import Any

import psutil

from podium.bench.clients import (
    RawHttp,
    WriteLog,
    floor_writer,
    http_writer,
    ws_writer,
)
from podium.bench.cpu import Group, Meter
from podium.bench.harness import Env, Server, floor_server
from podium.bench.stats import percentile, summary_ms
from podium.bench.subscribers import SubscriberPool


class Options:
    """Every knob, with small defaults so `podium bench X` finishes in seconds."""

    def __init__(self, **kw: Any) -> None:
        self.duration: float = kw.get("duration", 5.0)
        self.writers: int = kw.get("writers", 64)
        self.http_writers: int = kw.get("http_writers", 32)
        self.transport: str = kw.get("transport", "both")
        self.subscribers: int = kw.get("subscribers", 1000)
        self.procs: int = kw.get("procs", 4)
        self.rate: float = kw.get("rate", 100.0)
        self.boards: int = kw.get("boards", 1)
        self.board_size: int = kw.get("board_size", 10_000)
        self.readers: int = kw.get("readers", 32)
        self.server_cpu: int | None = kw.get("server_cpu")
        self.client_cpu: int | None = kw.get("client_cpu")
        self.accounts: int = kw.get("accounts", 20)
        self.grace: float = kw.get("grace", 1.5)
        self.fanout_writers: int = kw.get("fanout_writers", 1)
        self.repeat: int = kw.get("repeat", 1)
        self.idle: int = kw.get("idle", 900)
        self.active: int = kw.get("active", 100)
        self.sample_every: float = kw.get("sample_every", 5.0)
        self.warmup: float | None = kw.get("warmup")
        self.subscriber: str = kw.get("subscriber", "picows")
        self.workers: int = kw.get("workers", 1)


def _proc(server: Server) -> psutil.Process | None:
    return psutil.Process(server.pid) if server.pid else None


def _cpu(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    t = proc.cpu_times()
    return t.user + t.system


def _rss(proc: psutil.Process | None) -> int:
    return proc.memory_info().rss if proc is not None else 0


def _counter(start: int = 1) -> Any:
    it = itertools.count(start)
    return lambda: next(it)


async def writes(env: Env, opt: Options) -> dict[str, Any]:
    """K concurrent writers over add-score and over HTTP; every write durable."""
    out: dict[str, Any] = {}
    server = env.servers[0]
    transports = ["ws", "http"] if opt.transport == "both" else [opt.transport]
    for transport in transports:
        k = opt.writers if transport == "ws" else opt.http_writers
        accounts = await env.users(k)
        game = await env.game(operator="sum")
        log = WriteLog()
        meter = env.meter().start()
        log.started = time.monotonic()
        until = log.started + opt.duration
        if transport == "ws":
            jobs = [
                ws_writer(server.ws_url, a.token, game, lambda: 1, log, until) for a in accounts
            ]
        else:
            jobs = [http_writer(server.url, a.token, game, lambda: 1, log, until) for a in accounts]
        await asyncio.gather(*jobs)
        log.ended = time.monotonic()
        meter.stop()
        out[transport] = {
            "writers": k,
            "writes_per_s": round(log.rate),
            **summary_ms(log.latencies),
            "errors": log.errors,
            "cpu": meter.report(len(log.latencies), "write"),
        }
    return out


async def _fanout(
    opt: Options,
    write_server: Server,
    sub_server: Server,
    sub_urls: list[str],
    tokens: list[str | None],
    writer_job: Any,
    log: WriteLog,
    meter: Meter,
) -> dict[str, Any]:
    pool = SubscriberPool(sub_urls, tokens, opt.procs, opt.client_cpu, opt.subscriber)
    await pool.ready()
    proc = _proc(sub_server)
    wproc = _proc(write_server) if write_server is not sub_server else None
    cpu0, wcpu0 = _cpu(proc), _cpu(wproc)
    rss = _rss(proc)
    client0 = psutil.Process().cpu_times()
    meter.start()
    log.started = time.monotonic()
    await writer_job(log.started + opt.duration)
    log.ended = time.monotonic()
    await asyncio.sleep(opt.grace)  # let the last coalesced pushes land
    meter.stop()
    cpu = _cpu(proc) - cpu0
    scores = [s for s, _ in log.acked]
    first, last, pushes, missing = await pool.finish(scores)
    acks = [t for _, t in log.acked]
    lat_first = [f - a for f, a in zip(first, acks, strict=True) if f is not None]
    lat_last = [x - a for x, a in zip(last, acks, strict=True) if x is not None]
    client1 = psutil.Process().cpu_times()
    n = pool.connected
    result = {
        "subscribers": n,
        "connect_failures": pool.failed,
        "writes": len(log.acked),
        "writes_per_s": round(log.rate, 1),
        "write_ack": summary_ms(log.latencies),
        "to_first": summary_ms(lat_first),
        "to_last": summary_ms(lat_last),
        "undelivered": missing,
        "pushes": pushes,
        "pushes_per_s": round(pushes / max(1e-9, log.ended - log.started + opt.grace)),
        "pushes_per_socket_per_write": round(pushes / max(1, n * len(log.acked)), 3),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_pct": round(100 * cpu / (log.ended - log.started + opt.grace), 1),
        "server_us_per_push": round(cpu * 1e6 / pushes, 2) if pushes else None,
        "server_rss_mb": round(_rss(proc) / 2**20, 1),
        "server_rss_before_mb": round(rss / 2**20, 1),
        # Per push received by a socket in the window (not the snapshots of the
        # connects, which server_us_per_push counts); the write path's CPU is in it too.
        "cpu": meter.report(pool.window_frames, "push"),
        "cpu_per_write": meter.report(len(log.acked), "write"),
        "subscriber": pool.kind,
        # CPU of the subscriber processes over their whole life (connect included).
        "subscribers_cpu_s": round(pool.cpu_s, 2),
        # ... and over the measured window, per frame they received in it.
        "subscribers_window_cpu_s": round(pool.window_cpu_s, 2),
        "subscriber_us_per_frame": pool.us_per_frame,
        "bench_main_cpu_s": round(
            (client1.user + client1.system) - (client0.user + client0.system), 2
        ),
    }
    if wproc is not None:
        result["write_server_cpu_s"] = round(_cpu(wproc) - wcpu0, 2)
    return result


async def fanout(env: Env, opt: Options, cluster: bool = False) -> dict[str, Any]:
    """N scoreboard subscribers on one board (or B boards) while writes arrive."""
    write_server = env.servers[0]
    sub_server = env.servers[1] if cluster else env.servers[0]
    accounts = await env.users(opt.accounts)
    writers = await env.users(max(1, opt.fanout_writers))
    games = [await env.game(operator="best") for _ in range(max(1, opt.boards))]
    urls = [
        f"{sub_server.ws_url}/ws/v1/scoreboard?game={games[i % len(games)]}"
        for i in range(opt.subscribers)
    ]
    tokens: list[str | None] = [accounts[i % len(accounts)].token for i in range(len(urls))]
    next_score = _counter(1)
    pace = 1.0 / opt.rate if opt.rate > 0 else 0.0

    async def job(until: float) -> None:
        # Scores come from one rising counter, so the top score identifies the newest
        # write a push reflects (several writers: each push covers every lower score).
        await asyncio.gather(
            *(
                ws_writer(write_server.ws_url, w.token, g, next_score, log, until, pace)
                for g in games
                for w in writers
            )
        )

    log = WriteLog()
    # The cluster's figure is the subscribers' instance; the writes' instance is
    # write_server_cpu_s.
    meter = env.meter([sub_server])
    return await _fanout(opt, write_server, sub_server, urls, tokens, job, log, meter)


async def floor_fanout(opt: Options) -> dict[str, Any]:
    """The same subscribers and writes against a bare `websockets.broadcast()` server."""
    async with floor_server(opt.server_cpu) as server:
        urls = [f"{server.ws_url}/" for _ in range(opt.subscribers)]
        next_score = _counter(1)
        pace = 1.0 / opt.rate if opt.rate > 0 else 0.0
        # Shaped like a Podium diff of one moved row, so both carry the same bytes.
        payload = {
            "type": "diff",
            "board": "bench:all:1970-01-01",
            "seq": 1,
            "prev_seq": 0,
            "upserts": [{"rank": 1, "user_id": 1, "username": "bench-writer", "score": 0}],
            "left": [],
        }

        async def job(until: float) -> None:
            await floor_writer(server.ws_url, next_score, log, until, pace, payload)

        log = WriteLog()
        meter = Meter({"server": Group.of_pids([server.pid])})
        return await _fanout(opt, server, server, urls, [None] * len(urls), job, log, meter)


async def memory(env: Env, opt: Options) -> dict[str, Any]:
    """N idle authenticated sockets: server RSS per socket."""
    server = env.servers[0]
    accounts = await env.users(opt.accounts)
    game = await env.game()
    proc = _proc(server)
    before = _rss(proc)
    urls = [f"{server.ws_url}/ws/v1/scoreboard?game={game}" for _ in range(opt.subscribers)]
    tokens: list[str | None] = [accounts[i % len(accounts)].token for i in range(len(urls))]
    # The window is the connects (handshake, token check, first snapshot): CPU per socket.
    meter = env.meter().start()
    pool = SubscriberPool(urls, tokens, opt.procs, opt.client_cpu, opt.subscriber)
    await pool.ready()
    meter.stop()
    await asyncio.sleep(1.0)  # let allocator and buffers settle before reading RSS
    after = _rss(proc)
    await pool.finish([])
    n = max(1, pool.connected)
    return {
        "sockets": pool.connected,
        "connect_failures": pool.failed,
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "kb_per_socket": round((after - before) / n / 1024, 2),
        "cpu": meter.report(pool.connected, "connect"),
    }


async def reads(env: Env, opt: Options) -> dict[str, Any]:
    """Top page, rank of a user and around a user on a board of `board_size` users."""
    from podium.bench.harness import login

    t = time.perf_counter()
    # Through the CLI, so the load is the code under test's (see --server-python).
    env.cli("seed", "--users", str(opt.board_size), "--games", "1", "--months", "1",
            "--events-per-user", "1", "--seed", "7")  # fmt: skip
    load_s = time.perf_counter() - t
    server = env.servers[0]
    import httpx

    assert env.admin is not None, "the reads workload signs in as the bench admin"
    async with httpx.AsyncClient(base_url=server.url + "/api/v1") as http:
        r = await http.get("/games", headers=env.admin.headers)
        game = r.json()["games"][0]["id"]
        r = await http.get(
            f"/leaderboards/{game}", params={"limit": 1, "offset": 5}, headers=env.admin.headers
        )
        page = r.json()
    async with httpx.AsyncClient(base_url=server.url + "/api/v1") as http:
        reader = await login(http, page["entries"][0]["username"], "podium-seed-password")
    total = page["total"]
    results: dict[str, Any] = {"board_users": total, "load_s": round(load_s, 1)}
    rng = random.Random(1)
    ids_page = await _sample_user_ids(server, reader.headers, game, total, rng)
    kinds = {
        "top10": lambda: f"/api/v1/leaderboards/{game}?limit=10",
        "rank": lambda: f"/api/v1/leaderboards/{game}/users/{rng.choice(ids_page)}",
        "around": lambda: f"/api/v1/leaderboards/{game}/around/{rng.choice(ids_page)}?radius=5",
    }
    # The load dominates a big board's setup: measure it `repeat` times on one load.
    for kind, path in kinds.items():
        runs = []
        for _ in range(max(1, opt.repeat)):
            latencies: list[float] = []
            errors = [0]
            meter = env.meter().start()
            until = time.monotonic() + opt.duration
            start = time.monotonic()
            await asyncio.gather(
                *(
                    _reader(server, reader.headers, path, until, latencies, errors)
                    for _ in range(opt.readers)
                )
            )
            span = time.monotonic() - start
            meter.stop()
            runs.append(
                {
                    "reads_per_s": round(len(latencies) / span),
                    **summary_ms(latencies),
                    "errors": errors[0],
                    "cpu": meter.report(len(latencies), "read"),
                }
            )
        results[kind] = _median_run(runs)
        if len(runs) > 1:
            results[f"{kind}_runs"] = runs
    return results


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Field by field median of runs (nested dicts too); "n/a" when any run has none."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(first, dict):
            out[key] = _median_run(values)  # type: ignore[arg-type]
        elif all(isinstance(v, (int, float)) for v in values):
            out[key] = statistics.median(values)  # type: ignore[type-var]
        else:
            out[key] = first
    return out


async def _reader(
    server: Server,
    headers: dict[str, str],
    path: Any,
    until: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    client = RawHttp(server.url)
    await client.open()
    try:
        while time.monotonic() < until:
            sent = time.monotonic()
            status, _ = await client.get(path(), headers)
            if status == 200:
                latencies.append(time.monotonic() - sent)
            else:
                errors[0] += 1
    finally:
        await client.close()


async def _sample_user_ids(
    server: Server, headers: dict[str, str], game: str, total: int, rng: random.Random
) -> list[int]:
    ids: list[int] = []
    client = RawHttp(server.url)
    await client.open()
    import json

    try:
        for _ in range(20):
            offset = rng.randrange(max(1, total - 200))
            status, body = await client.get(
                f"/api/v1/leaderboards/{game}?offset={offset}&limit=200", headers
            )
            if status == 200:
                ids += [e["user_id"] for e in json.loads(body)["entries"]]
    finally:
        await client.close()
    return ids or [0]


def ratio(podium: dict[str, Any], floor: dict[str, Any]) -> float | None:
    a, b = podium.get("server_us_per_push"), floor.get("server_us_per_push")
    return round(a / b, 2) if a and b else None


__all__ = ["Options", "fanout", "floor_fanout", "memory", "percentile", "ratio", "reads", "writes"]
