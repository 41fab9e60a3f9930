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


@pytest.mark.parametrize("workload", ["writes", "fanout", "reads", "memory", "cluster"])
def test_bench_workload_runs(workload: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = [sys.executable, "-m", "podium", "bench", workload, *TINY, "--json", str(out)]
    if workload == "fanout":
        args.append("--floor")
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    figures = data[workload]
    if workload == "writes":
        for transport in ("ws", "http"):
            assert figures[transport]["writes_per_s"] > 0
            assert figures[transport]["errors"] == 0
    elif workload in ("fanout", "cluster"):
        assert figures["subscribers"] == 20 and figures["connect_failures"] == 0
        assert figures["writes"] > 0 and figures["undelivered"] == 0
        assert figures["to_last"]["p50_ms"] is not None
        if workload == "fanout":
            assert data["floor"]["undelivered"] == 0 and data["floor_ratio"] is not None
    elif workload == "reads":
        assert figures["board_users"] == 300
        for kind in ("top10", "rank", "around"):
            assert figures[kind]["reads_per_s"] > 0 and figures[kind]["errors"] == 0
    else:
        assert figures["sockets"] == 20 and figures["kb_per_socket"] is not None
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
