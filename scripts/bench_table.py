"""Medians of `scripts/bench_all.sh` runs, as the markdown rows of docs/benchmarks.md."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def load(out: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{name}-*.json"))]


def med(runs: list[dict[str, Any]], *path: str) -> str:
    values = []
    for run in runs:
        node: Any = run
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, (int, float)):
            values.append(node)
    if not values:
        return "n/a"
    spread = f" ({min(values):g} to {max(values):g})" if len(values) > 1 else ""
    return f"{statistics.median(values):g}{spread}"


def p50_p99(runs: list[dict[str, Any]], *path: str) -> str:
    return f"{med(runs, *path, 'p50_ms')} / {med(runs, *path, 'p99_ms')}"


def main(out: Path) -> None:
    w = load(out, "writes")
    f = load(out, "fanout1k")
    lat = load(out, "lat1k")
    mid = load(out, "fan5k")
    big = load(out, "fan10k")
    mem = load(out, "memory")
    cl = load(out, "cluster")
    rd = load(out, "reads")
    rows = [
        ("durable writes/s over add-score, 64 writers", med(w, "writes", "ws", "writes_per_s")),
        (
            "  ack p50 / p99 ms",
            p50_p99(w, "writes", "ws"),
        ),
        ("durable writes/s over HTTP, 32 writers", med(w, "writes", "http", "writes_per_s")),
        (
            "  ack p50 / p99 ms",
            p50_p99(w, "writes", "http"),
        ),
        (
            "writes/s with 1,000 scoreboard subscribers (32 writers)",
            med(f, "fanout", "writes_per_s"),
        ),
        (
            "  write → last of 1,000, p50 / p99 ms",
            p50_p99(f, "fanout", "to_last"),
        ),
        (
            "write → last of 1,000 at 100 writes/s, p50 / p99 ms",
            p50_p99(lat, "fanout", "to_last"),
        ),
        ("  write → first, p50 ms", med(lat, "fanout", "to_first", "p50_ms")),
        (
            "5,000 subscribers at 100 writes/s: write → last p50 / p99 ms",
            p50_p99(mid, "fanout", "to_last"),
        ),
        (
            "10,000 subscribers at 100 writes/s: write → last p50 / p99 ms",
            p50_p99(big, "fanout", "to_last"),
        ),
        ("  undelivered (write-socket pairs never seen)", med(big, "fanout", "undelivered")),
        (
            "  writes/s sustained meanwhile (1,000 / 5,000 / 10,000 subscribers)",
            " / ".join(med(r, "fanout", "writes_per_s") for r in (lat, mid, big)),
        ),
        (
            "  load generator: subscriber processes' CPU s (1,000 / 5,000 / 10,000)",
            " / ".join(med(r, "fanout", "subscribers_cpu_s") for r in (lat, mid, big)),
        ),
        ("server memory per idle socket, KB (5,000 sockets)", med(mem, "memory", "kb_per_socket")),
        (
            "server CPU per push per socket, µs (1,000 subs, 100 writes/s)",
            med(lat, "fanout", "server_us_per_push"),
        ),
        (
            "floor (websockets.broadcast) CPU per push per socket, µs",
            med(lat, "floor", "server_us_per_push"),
        ),
        ("ratio Podium / floor", med(lat, "floor_ratio")),
        (
            "cluster: write on A → last of 1,000 on B, p50 / p99 ms",
            p50_p99(cl, "cluster", "to_last"),
        ),
        (
            "reads/s top 10 (p99 ms)",
            f"{med(rd, 'reads', 'top10', 'reads_per_s')} ({med(rd, 'reads', 'top10', 'p99_ms')})",
        ),
        (
            "reads/s rank of a user (p99 ms)",
            f"{med(rd, 'reads', 'rank', 'reads_per_s')} ({med(rd, 'reads', 'rank', 'p99_ms')})",
        ),
        (
            "reads/s around a user (p99 ms)",
            f"{med(rd, 'reads', 'around', 'reads_per_s')} ({med(rd, 'reads', 'around', 'p99_ms')})",
        ),
        ("  board size", med(rd, "reads", "board_users")),
    ]
    print("| figure | median of 3 (min to max) |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
