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
