"""The soak workload: many sockets and a steady write rate for a long time, watching
the server's RSS and open file descriptors for a leak."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import psutil

from podium.bench.clients import WriteLog, ws_writer
from podium.bench.harness import Env
from podium.bench.stats import summary_ms
from podium.bench.subscribers import SubscriberPool

# After warm-up, RSS within this spread counts as flat (the brief's criterion).
FLAT_PCT = 10.0
# Live paths the active sockets cycle through, so each kind of subscription is soaked.
ACTIVE_PATHS = ("scoreboard?game={g}", "scores?game={g}&limit=10", "my-score?game={g}")


def _sample(proc: psutil.Process | None, t0: float, phase: str) -> dict[str, Any]:
    if proc is None:
        return {"t_s": round(time.monotonic() - t0, 1), "phase": phase}
    with proc.oneshot():
        cpu = proc.cpu_times()
        return {
            "t_s": round(time.monotonic() - t0, 1),
            "phase": phase,
            "rss_mb": round(proc.memory_info().rss / 2**20, 1),
            "fds": proc.num_fds(),
            "cpu_s": round(cpu.user + cpu.system, 1),
        }


def flatness(samples: list[dict[str, Any]], key: str = "rss_mb") -> dict[str, Any]:
    """Spread of `key` over the samples, as a percentage of the smallest one."""
    values = [s[key] for s in samples if key in s]
    if not values:
        return {"min": None, "max": None, "spread_pct": None, "flat": None}
    low, high = min(values), max(values)
    spread = round(100 * (high - low) / low, 1) if low else None
    return {
        "min": low,
        "max": high,
        "first": values[0],
        "last": values[-1],
        "spread_pct": spread,
        "flat": spread is not None and spread <= FLAT_PCT,
    }


def ascii_curve(samples: list[dict[str, Any]], key: str = "rss_mb", width: int = 50) -> str:
    """One line per sample, a bar scaled from zero to the largest value."""
    values = [s.get(key) for s in samples]
    top = max((v for v in values if v is not None), default=0) or 1
    lines = []
    for s, v in zip(samples, values, strict=True):
        bar = "#" * round(width * (v or 0) / top)
        fds = s.get("fds", "-")
        lines.append(f"{s['t_s']:>7.1f}s {s['phase']:<7} {v!s:>8} MB {fds!s:>6} fds {bar}")
    return "\n".join(lines)


async def soak(env: Env, opt: Any) -> dict[str, Any]:
    """`idle` sockets on a quiet board, `active` ones on a written board, writes at a
    steady rate for `duration` seconds; RSS and fds sampled every `sample_every` s."""
    server = env.servers[0]
    proc = psutil.Process(server.pid) if server.pid else None
    accounts = await env.users(opt.accounts)
    writers = await env.users(max(1, opt.fanout_writers))
    quiet = await env.game(operator="best")
    # `last` with random scores keeps the top moving for ever (so pushes never stop),
    # and a subscriber's record of new best scores stays tiny however long it runs.
    busy = await env.game(operator="last")
    base = f"{server.ws_url}/ws/v1/"
    urls = [base + f"scoreboard?game={quiet}"] * opt.idle
    urls += [base + ACTIVE_PATHS[i % len(ACTIVE_PATHS)].format(g=busy) for i in range(opt.active)]
    tokens: list[str | None] = [accounts[i % len(accounts)].token for i in range(len(urls))]

    t0 = time.monotonic()
    samples = [_sample(proc, t0, "start")]
    phase = ["connect"]

    async def sampler() -> None:
        while True:
            await asyncio.sleep(opt.sample_every)
            samples.append(_sample(proc, t0, phase[0]))

    sampling = asyncio.create_task(sampler())
    pool = SubscriberPool(urls, tokens, opt.procs, opt.client_cpu, opt.subscriber)
    try:
        await pool.ready()
        connect_s = time.monotonic() - t0
        phase[0] = "load"
        rng = random.Random(1)
        log = WriteLog()
        log.started = time.monotonic()
        until = log.started + opt.duration
        pace = 1.0 / opt.rate if opt.rate > 0 else 0.0
        await asyncio.gather(
            *(
                ws_writer(server.ws_url, w.token, busy, lambda: rng.randrange(1, 10**6), log,
                          until, pace)
                for w in writers
            )
        )  # fmt: skip
        log.ended = time.monotonic()
        samples.append(_sample(proc, t0, "end"))
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
    _, _, pushes, _ = await pool.finish([])
    warmup = opt.warmup if opt.warmup is not None else 0.2 * opt.duration
    steady = [
        s for s in samples if s["phase"] in ("load", "end") and s["t_s"] >= connect_s + warmup
    ]
    return {
        "sockets": pool.connected,
        "idle": opt.idle,
        "active": opt.active,
        "connect_failures": pool.failed,
        "closed_during_soak": pool.dropped - pool.failed,
        "connect_s": round(connect_s, 1),
        "duration_s": round(log.ended - log.started, 1),
        "writes": len(log.acked),
        "write_errors": log.errors,
        "writes_per_s": round(log.rate, 1),
        "write_ack": summary_ms(log.latencies),
        "pushes": pushes,
        "warmup_s": round(warmup, 1),
        "rss_after_warmup_mb": flatness(steady),
        "fds_after_warmup": flatness(steady, "fds"),
        "samples": samples,
    }
