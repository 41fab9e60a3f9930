"""The benchmark harness itself, at tiny sizes, so it cannot rot. No figure is asserted:
performance is measured by `podium bench`, never by a timed test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--duration", "1", "--subscribers", "20", "--procs", "2", "--rate", "20",
        "--writers", "2", "--http-writers", "2", "--readers", "2", "--board-size", "300",
        "--accounts", "3"]  # fmt: skip


def _assert_cpu(cpu: dict[str, object], per: str, *, stores_busy: bool = False) -> None:
    """The CPU block: every process present, the server's figure positive; PostgreSQL's
    too where the window wrote (a 1 s idle window can read 0 at the clock's 10 ms tick)."""
    assert cpu["per"] == per and isinstance(cpu["ops"], int) and cpu["ops"] > 0
    for name in ("server", "postgres", "valkey"):
        for field in (f"{name}_cpu_s", f"{name}_us_per_op"):
            value = cpu[field]
            assert isinstance(value, (int, float)) and value >= 0, (field, value)
    assert cpu["server_us_per_op"] > 0  # type: ignore[operator]
    if stores_busy:
        assert cpu["postgres_us_per_op"] > 0  # type: ignore[operator]
    assert cpu["total_us_per_op"] >= cpu["server_us_per_op"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("workload", "extra"),
    [
        ("writes", []),
        ("fanout", ["--floor"]),
        ("fanout", ["--subscriber", "websockets"]),
        ("reads", []),
        ("memory", []),
        ("cluster", []),
    ],
)
def test_bench_workload_runs(workload: str, extra: list[str], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = [sys.executable, "-m", "podium", "bench", workload, *TINY, *extra, "--json", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    figures = data[workload]
    if workload == "writes":
        for transport in ("ws", "http"):
            assert figures[transport]["writes_per_s"] > 0
            assert figures[transport]["errors"] == 0
            _assert_cpu(figures[transport]["cpu"], "write", stores_busy=True)
    elif workload in ("fanout", "cluster"):
        assert figures["subscribers"] == 20 and figures["connect_failures"] == 0
        assert figures["writes"] > 0 and figures["undelivered"] == 0
        assert figures["to_last"]["p50_ms"] is not None
        _assert_cpu(figures["cpu"], "push")
        _assert_cpu(figures["cpu_per_write"], "write")
        assert figures["subscriber"] == ("websockets" if extra[-1:] == ["websockets"] else "picows")
        assert figures["subscriber_us_per_frame"] > 0
        if "--floor" in extra:
            assert data["floor"]["undelivered"] == 0 and data["floor_ratio"] is not None
            # The floor has no stores: only its server is measured.
            assert data["floor"]["cpu"]["server_us_per_op"] > 0
    elif workload == "reads":
        assert figures["board_users"] == 300
        for kind in ("top10", "rank", "around"):
            assert figures[kind]["reads_per_s"] > 0 and figures[kind]["errors"] == 0
            _assert_cpu(figures[kind]["cpu"], "read")
    else:
        assert figures["sockets"] == 20 and figures["kb_per_socket"] is not None
        _assert_cpu(figures["cpu"], "connect")
    assert "figure" in result.stdout  # the printed table


def test_bench_soak_samples_rss_and_fds(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = [sys.executable, "-m", "podium", "bench", "soak", "--duration", "2", "--idle", "6",
            "--active", "6", "--procs", "2", "--rate", "10", "--accounts", "3",
            "--sample-every", "0.5", "--json", str(out)]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())["soak"]
    assert figures["sockets"] == 12 and figures["connect_failures"] == 0
    assert figures["closed_during_soak"] == 0
    assert figures["writes"] > 0 and figures["write_errors"] == 0 and figures["pushes"] > 0
    load = [s for s in figures["samples"] if s["phase"] == "load"]
    assert len(load) >= 2 and all(s["rss_mb"] > 0 and s["fds"] > 0 for s in load)
    assert figures["rss_after_warmup_mb"]["spread_pct"] is not None
    assert "MB" in result.stdout and "rss_after_warmup_mb.flat" in result.stdout


def test_soak_flatness_is_the_spread_over_the_smallest_sample() -> None:
    from podium.bench.soak import flatness

    flat = flatness([{"rss_mb": 100.0}, {"rss_mb": 109.0}, {"rss_mb": 104.0}])
    assert flat == {"min": 100.0, "max": 109.0, "first": 100.0, "last": 104.0,
                    "spread_pct": 9.0, "flat": True}  # fmt: skip
    assert flatness([{"rss_mb": 100.0}, {"rss_mb": 111.0}])["flat"] is False
    assert flatness([{"t_s": 0}])["flat"] is None  # no sample: no verdict


def test_bench_table_makes_the_issue_rows_from_json(tmp_path: Path) -> None:
    """scripts/bench_table.py: medians and min to max of CPU per op per process."""

    def writes(rate: int, server: float) -> dict[str, object]:
        cpu = {
            "per": "write",
            "ops": 10,
            "server_us_per_op": server,
            "postgres_us_per_op": 2.0,
            "valkey_us_per_op": "n/a",
            "total_us_per_op": "n/a",
        }
        return {"writes": {"ws": {"writes_per_s": rate, "p50_ms": 1.0, "p99_ms": 2.0,
                                  "cpu": cpu}}}  # fmt: skip

    for i, (rate, server) in enumerate([(100, 30.0), (300, 10.0), (200, 20.0)], 1):
        (tmp_path / f"writes4-{i}.json").write_text(json.dumps(writes(rate, server)))
    script = Path(__file__).parent.parent / "scripts" / "bench_table.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                            text=True, check=True)  # fmt: skip
    row = next(x for x in result.stdout.splitlines() if "4 add-score writers" in x)
    cells = [c.strip() for c in row.strip("|").split("|")]
    dash = "\N{EN DASH}"
    assert cells[1:] == [f"200 (100{dash}300)", f"1.0 (1.0{dash}1.0) / 2.0 (2.0{dash}2.0)",
                         f"20.0 (10.0{dash}30.0)", f"2.0 (2.0{dash}2.0)", "n/a", "n/a"]  # fmt: skip
