"""Medians of `scripts/bench_all.sh` runs: the issue-10 table (throughput, latency and CPU
µs per operation of each process) and the markdown rows of docs/benchmarks.md.

Usage: uv run python scripts/bench_table.py OUT_DIR
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def load(out: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{name}-*.json"))]


def dig(node: Any, *path: str) -> Any:
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def numbers(nodes: list[Any], *path: str) -> list[float]:
    found = [dig(n, *path) for n in nodes]
    return [v for v in found if isinstance(v, (int, float)) and not isinstance(v, bool)]


def med(runs: list[dict[str, Any]], *path: str) -> str:
    values = numbers(runs, *path)
    if not values:
        return "n/a"
    spread = f" ({min(values):g} to {max(values):g})" if len(values) > 1 else ""
    return f"{statistics.median(values):g}{spread}"


def p50_p99(runs: list[dict[str, Any]], *path: str) -> str:
    return f"{med(runs, *path, 'p50_ms')} / {med(runs, *path, 'p99_ms')}"


# --- the issue-10 table ------------------------------------------------------------------


def fig(nodes: list[Any], *path: str, digits: int = 0) -> str:
    """Median (min to max) of a figure over the runs; "n/a" when no run has it."""
    values = numbers(nodes, *path)
    if not values:
        return "n/a"

    def f(v: float) -> str:
        return f"{v:,.{digits}f}"

    m = statistics.median(values)
    return f(m) if len(values) == 1 else f"{f(m)} ({f(min(values))}\N{EN DASH}{f(max(values))})"


def sections(runs: list[dict[str, Any]], *path: str) -> list[Any]:
    """The figure dicts at `path` of each run; a reads run measured N times on one load
    (`--repeat`) counts as N runs."""
    out: list[Any] = []
    for run in runs:
        repeated = dig(run, *path[:-1], f"{path[-1]}_runs")
        out += repeated if isinstance(repeated, list) else [dig(run, *path)]
    return [s for s in out if isinstance(s, dict)]


def cpu_cells(nodes: list[Any], cpu: str = "cpu") -> list[str]:
    return [
        fig(nodes, cpu, f"{name}_us_per_op", digits=1)
        for name in ("server", "postgres", "valkey", "total")
    ]


def issue10(out: Path) -> list[str]:
    w, w4 = load(out, "writes"), load(out, "writes4")
    r100, r1m = load(out, "reads100k"), load(out, "reads1m")
    fans = [(n, load(out, name)) for n, name in (("1,000", "lat1k"), ("5,000", "fan5k"),
                                                 ("10,000", "fan10k"))]  # fmt: skip
    rows: list[list[str]] = []

    def row(label: str, nodes: list[Any], rate: str, lat: str | None = None) -> None:
        if not nodes:
            return
        p = lat + "." if lat else ""
        latency = f"{fig(nodes, *(p + 'p50_ms').split('.'), digits=1)} / " + fig(
            nodes, *(p + "p99_ms").split("."), digits=1
        )
        rows.append([label, fig(nodes, rate), latency, *cpu_cells(nodes)])

    row("durable write, 64 add-score writers", sections(w, "writes", "ws"), "writes_per_s")
    row("durable write, 4 add-score writers", sections(w4, "writes", "ws"), "writes_per_s")
    row("durable write over HTTP, 32 writers", sections(w, "writes", "http"), "writes_per_s")
    for size, runs in (("100k", r100), ("1M", r1m)):
        row(f"top-10 page read, {size}-user board", sections(runs, "reads", "top10"),
            "reads_per_s")  # fmt: skip
        row(f"rank of a user, {size}", sections(runs, "reads", "rank"), "reads_per_s")
        row(f"around a user, {size}", sections(runs, "reads", "around"), "reads_per_s")
    for n, runs in fans:
        row(f"push to {n} subscribers at 100 writes/s (per push per socket; write → last)",
            sections(runs, "fanout"), "pushes_per_s", "to_last")  # fmt: skip
    head = ["path", "ops/s", "p50 / p99 ms", "server µs/op", "PostgreSQL µs/op",
            "Valkey µs/op", "total µs/op"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    subs = [(n, sections(runs, "fanout")) for n, runs in fans]
    if any(nodes for _, nodes in subs):
        kind = next((dig(s[0], "subscriber") for _, s in subs if s), None) or "websockets"
        cells = " / ".join(fig(nodes, "subscriber_us_per_frame", digits=1) for _, nodes in subs)
        lines.append(
            f"| load generator ({kind}): subscriber CPU µs per received frame "
            f"(1,000 / 5,000 / 10,000) | {cells} | | | | | |"
        )
    workers = {dig(r, "options", "workers") for r in w + w4 + r100 + r1m}
    workers.discard(None)
    if workers - {1}:
        lines.insert(0, f"server workers: {', '.join(str(x) for x in sorted(workers))}\n")
    return lines


# --- the docs/benchmarks.md rows ---------------------------------------------------------


def main(out: Path) -> None:
    w = load(out, "writes")
    f = load(out, "fanout1k")
    lat = load(out, "lat1k")
    mid = load(out, "fan5k")
    big = load(out, "fan10k")
    mem = load(out, "memory")
    cl = load(out, "cluster")
    rd = load(out, "reads1m") or load(out, "reads")
    rows = [
        ("durable writes/s over add-score, 64 writers", med(w, "writes", "ws", "writes_per_s")),
        ("  ack p50 / p99 ms", p50_p99(w, "writes", "ws")),
        ("durable writes/s over HTTP, 32 writers", med(w, "writes", "http", "writes_per_s")),
        ("  ack p50 / p99 ms", p50_p99(w, "writes", "http")),
        (
            "writes/s with 1,000 scoreboard subscribers (32 writers)",
            med(f, "fanout", "writes_per_s"),
        ),
        ("  write → last of 1,000, p50 / p99 ms", p50_p99(f, "fanout", "to_last")),
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
            "  load generator: subscriber CPU µs per received frame (1,000 / 5,000 / 10,000)",
            " / ".join(med(r, "fanout", "subscriber_us_per_frame") for r in (lat, mid, big)),
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
    print("## Issue 10: CPU per operation of each process (median of 3, min\N{EN DASH}max)\n")
    print("\n".join(issue10(out)))
    print("\n## All figures\n")
    print("| figure | median of 3 (min to max) |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
