"""The bench's CPU accounting (podium.bench.cpu) and subscriber bookkeeping, on real
processes and sockets."""

from __future__ import annotations

import socket
import subprocess
import sys

from podium.bench.cpu import Group, Meter
from podium.bench.harness import Env
from podium.bench.subscribers import Arrivals, first_and_last, top_score

# A parent that, on each line of input, runs a child burning CPU and waits for it, then
# answers: the child is gone (reaped) by the time the answer comes.
PARENT = (
    "import subprocess, sys\n"
    "for _ in sys.stdin:\n"
    "    subprocess.run([sys.executable, '-c', 'sum(range(20_000_000))'])\n"
    "    print('done', flush=True)\n"
)


def test_a_child_that_exits_in_the_window_is_counted_by_its_reaper() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert parent.stdin and parent.stdout
    try:
        meter = Meter({"server": Group.of_pids([parent.pid])}).start()
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "done"
        meter.stop()
        cpu = meter.cpu_s("server")
        # The parent only waited: the CPU is the exited child's, counted once.
        assert cpu is not None and cpu > 0.05
        report = meter.report(2, "run")
        assert report["server_us_per_op"] == round(cpu * 1e6 / 2, 1)
        assert report["total_us_per_op"] == report["server_us_per_op"]
    finally:
        parent.kill()
        parent.wait()


def test_a_store_is_found_by_the_port_it_listens_on() -> None:
    listener = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys\n"
         "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
         "print(s.getsockname()[1], flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert listener.stdout
    try:
        port = int(listener.stdout.readline())
        group = Group.listening_on(f"redis://:secret@127.0.0.1:{port}/0")
        assert group.root is not None and group.root.pid == listener.pid
        assert group.cpu_s() is not None
    finally:
        listener.kill()
        listener.wait()


def test_an_unknown_or_remote_store_reports_n_a() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert Group.listening_on(f"postgresql://u:p@127.0.0.1:{free}/db").root is None
    assert Group.listening_on("postgresql://u:p@db.example.invalid:5432/db").root is None
    assert Group.listening_on("postgresql:///db?host=/run/postgresql").root is None
    meter = Meter({"server": [], "valkey": [Group.listening_on(None)]}).start().stop()
    report = meter.report(5, "write")
    assert report["server_us_per_op"] == "n/a" and report["valkey_cpu_s"] == "n/a"
    assert report["total_us_per_op"] == "n/a"


def test_workers_are_passed_to_serve_only_when_more_than_one() -> None:
    assert "--workers" not in Env(workers=1).serve_command(8000)
    cmd = Env(workers=3, server_cpu=0, python="/venv/bin/python").serve_command(8000)
    assert cmd[-2:] == ["--workers", "3"] and "/venv/bin/python" in cmd


def test_first_and_last_arrival_per_write_and_the_pairs_never_seen() -> None:
    a, b = Arrivals(), Arrivals()
    for score, t in [(3, 1.0), (2, 1.5), (7, 2.0)]:  # 2 does not raise a's best: ignored
        a.saw(score, t)
    b.saw(5, 1.2)
    first, last, missing = first_and_last([a, b], [1, 4, 6, 8])
    assert first == [1.0, 1.2, 2.0, None]
    assert last == [1.2, 2.0, 2.0, None]
    assert missing == 1 + 2  # 6 never reached b; 8 reached nobody


def test_top_score_reads_snapshots_and_diffs() -> None:
    assert top_score('{"type":"snapshot","entries":[{"score":4},{"score":9}]}') == 9
    assert top_score(b'{"type":"diff","upserts":[{"score":12}],"left":[]}') == 12
    assert top_score('{"type":"error"}') is None
    assert top_score("[1, 2]") is None
