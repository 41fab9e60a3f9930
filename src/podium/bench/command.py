"""`podium bench WORKLOAD`: run a workload, print a table, optionally write JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from podium.settings import Settings

WORKLOADS = ("writes", "fanout", "reads", "memory", "cluster", "soak", "all")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # Imported here: the bench needs psutil (from the default dependency groups), and
    # the rest of the CLI must work without it.
    from podium.bench import soak, workloads
    from podium.bench.harness import Env, pin, raise_fd_limit

    opt = workloads.Options(
        duration=args.duration,
        writers=args.writers,
        http_writers=args.http_writers,
        transport=args.transport,
        subscribers=args.subscribers,
        procs=args.procs,
        rate=args.rate,
        boards=args.boards,
        board_size=args.board_size,
        readers=args.readers,
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        accounts=args.accounts,
        fanout_writers=args.fanout_writers,
        repeat=args.repeat,
        idle=args.idle,
        active=args.active,
        sample_every=args.sample_every,
        warmup=args.warmup,
        subscriber=args.subscriber,
        workers=args.workers,
    )
    pin(args.client_cpu)
    raise_fd_limit()
    chosen = (
        ["writes", "fanout", "reads", "memory", "cluster"]
        if args.workload == "all"
        else [args.workload]
    )
    results: dict[str, Any] = {"cpus": os.cpu_count(), "options": vars(opt)}
    if args.target == "floor":
        results["floor"] = await workloads.floor_fanout(opt)
        return results
    for name in chosen:
        instances = 2 if name == "cluster" else 1
        async with Env(
            instances=instances,
            server_cpu=args.server_cpu,
            redis_url=args.redis_url,
            database_url=args.database_url,
            workers=args.workers,
            python=args.server_python,
        ) as env:
            if name == "writes":
                results["writes"] = await workloads.writes(env, opt)
            elif name == "fanout":
                results["fanout"] = await workloads.fanout(env, opt)
            elif name == "cluster":
                results["cluster"] = await workloads.fanout(env, opt, cluster=True)
            elif name == "memory":
                results["memory"] = await workloads.memory(env, opt)
            elif name == "reads":
                results["reads"] = await workloads.reads(env, opt)
            elif name == "soak":
                results["soak"] = await soak.soak(env, opt)
        if name == "fanout" and args.floor:
            results["floor"] = await workloads.floor_fanout(opt)
            results["floor_ratio"] = workloads.ratio(results["fanout"], results["floor"])
    return results


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from podium.bench.soak import ascii_curve
    from podium.bench.stats import print_table

    # One line per setup request would bury the table.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    results = asyncio.run(run(args))
    flat: dict[str, Any] = {}
    for key, value in results.items():
        if key not in ("options",):
            _flatten(key, value, flat)
    flat.pop("soak.samples", None)  # printed as a curve above the table
    samples = results.get("soak", {}).get("samples")
    if samples:
        print("server RSS (MB) over time")
        print(ascii_curve(samples))
    print_table(f"podium bench {args.workload} (target {args.target})", flat)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure writes, fan-out, reads and memory over real sockets",
        description="Starts its own stores and `podium serve` processes (pinned with "
        "--server-cpu) and drives them from this process and subscriber processes "
        "(pinned with --client-cpu).",
    )
    p.add_argument("workload", choices=WORKLOADS)
    p.add_argument(
        "--target",
        choices=("podium", "floor"),
        default="podium",
        help="floor: the fanout client against a bare websockets.broadcast() server",
    )
    p.add_argument("--floor", action="store_true", help="after fanout, run the floor too")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load per figure")
    p.add_argument("--writers", type=int, default=64, help="add-score writers (writes)")
    p.add_argument("--http-writers", type=int, default=32, help="HTTP writers (writes)")
    p.add_argument("--transport", choices=("ws", "http", "both"), default="both")
    p.add_argument("--subscribers", type=int, default=1000, help="sockets (fanout, memory)")
    p.add_argument("--boards", type=int, default=1, help="spread subscribers over B boards")
    p.add_argument("--procs", type=int, default=4, help="subscriber processes")
    p.add_argument("--rate", type=float, default=100.0, help="writes/s per writer; 0 = flat out")
    p.add_argument("--fanout-writers", type=int, default=1, help="writers per board (fanout)")
    p.add_argument("--board-size", type=int, default=10_000, help="users on the board (reads)")
    p.add_argument("--readers", type=int, default=32, help="concurrent readers (reads)")
    p.add_argument("--repeat", type=int, default=1, help="measure reads N times on one load")
    p.add_argument("--accounts", type=int, default=20, help="accounts the sockets share")
    p.add_argument("--idle", type=int, default=900, help="sockets on a quiet board (soak)")
    p.add_argument("--active", type=int, default=100, help="sockets on the written board (soak)")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, help="seconds of load before RSS must be flat "
                   "(soak; default a fifth of --duration)")  # fmt: skip
    p.add_argument("--subscriber", choices=("picows", "websockets"), default="picows",
                   help="subscriber client: picows (C frame parsing, one cached decode per "
                   "distinct push) or the pure-Python websockets one (to compare)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1,
                   help="`podium serve --workers N` (passed only when N > 1); CPU is "
                   "summed over the server's worker processes")  # fmt: skip
    p.add_argument("--server-python",
                   help="interpreter that runs `podium serve`, migrate and seed (e.g. another "
                   "checkout's .venv/bin/python, to measure its code with this bench)")  # fmt: skip
    p.add_argument("--server-cpu", type=int, help="pin the server(s) to this CPU (taskset)")
    p.add_argument("--client-cpu", type=int, help="pin the load to this CPU")
    p.add_argument("--redis-url", help="use this Redis instead of an embedded Valkey")
    p.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one")
    p.add_argument("--json", help="also write the results to this file")
    p.set_defaults(func=cmd_bench)
