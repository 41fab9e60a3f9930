"""Embedded Valkey and PostgreSQL: start, stop, data dir ownership, no orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from podium.embedded import (
    DataDirLock,
    EmbeddedError,
    EmbeddedPostgres,
    EmbeddedValkey,
    embedded_stores,
    free_port,
)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), f"process {pid} survived"


def test_valkey_starts_stops_and_keeps_its_data(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey")
    valkey.start()
    assert valkey.proc is not None
    pid = valkey.proc.pid
    try:
        client = redis.Redis.from_url(valkey.url)
        client.set("kept", "yes")
        client.close()
    finally:
        valkey.stop()
    assert not alive(pid)

    again = EmbeddedValkey(tmp_path / "valkey")
    again.start()
    try:
        client = redis.Redis.from_url(again.url)
        assert client.get("kept") == b"yes"  # the append-only file survived the stop
        client.close()
    finally:
        again.stop()


def test_a_taken_port_is_an_error_not_a_stranger(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        valkey = EmbeddedValkey(tmp_path / "valkey", persist=False, port=port)
        with pytest.raises(EmbeddedError, match="exited"):
            valkey.start(timeout=10)
        valkey.stop()


def test_postgres_initialises_once_and_restarts(tmp_path: Path) -> None:
    import asyncio

    import asyncpg

    async def roundtrip(url: str, write: bool) -> str | None:
        conn = await asyncpg.connect(url)
        try:
            if write:
                await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('yes')")
                return None
            return await conn.fetchval("SELECT v FROM kept")
        finally:
            await conn.close()

    pg = EmbeddedPostgres(tmp_path / "pg", durable=False)
    pg.start()
    try:
        asyncio.run(roundtrip(pg.url, write=True))
    finally:
        pg.stop()
    assert pg.proc is not None and not alive(pg.proc.pid)
    again = EmbeddedPostgres(tmp_path / "pg", durable=False)
    again.start()
    try:
        assert asyncio.run(roundtrip(again.url, write=False)) == "yes"
    finally:
        again.stop()


def test_embedded_stores_own_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with embedded_stores(data, need_redis=True, need_postgres=False) as urls:
        assert set(urls) == {"redis_url"}
        assert redis.Redis.from_url(urls["redis_url"]).ping()
        pids = [int(p) for p in (data / "children").read_text().split()]
        assert len(pids) == 1 and alive(pids[0])

        # A second server is refused, naming the data dir ...
        with (
            pytest.raises(EmbeddedError, match="already running on the data dir") as refused,
            embedded_stores(data, need_redis=True, need_postgres=False),
        ):
            pass
        assert str(data) in str(refused.value)
        # ... while a CLI command borrows the running servers instead of starting its own.
        with embedded_stores(data, need_redis=True, need_postgres=False, role="cli") as borrowed:
            assert borrowed == urls
        assert alive(pids[0])

    assert not alive(pids[0])
    assert not (data / "run.json").exists() and not (data / "children").exists()
    # Released: the next owner gets it at once.
    lock = DataDirLock(data)
    assert lock.acquire()
    lock.release()


def test_without_needs_nothing_starts(tmp_path: Path) -> None:
    with embedded_stores(tmp_path / "data", need_redis=False, need_postgres=False) as urls:
        assert urls == {}
    assert not (tmp_path / "data").exists()


def test_new_owner_waits_for_the_servers_of_a_killed_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    workdir = data / "valkey"
    workdir.mkdir(parents=True)
    # Stands for a server still shutting down after its Podium was killed.
    straggler = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=workdir)
    # A pid that is alive but not working in the data dir is not waited for.
    (data / "children").write_text(f"{os.getpid()}\n{straggler.pid}\n")
    lock = DataDirLock(data)
    acquired: list[bool] = []
    waiter = threading.Thread(target=lambda: acquired.append(lock.acquire()))
    try:
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive(), "acquired while a server of the old owner still ran"
        straggler.kill()
        straggler.wait()
        waiter.join(10)
        assert acquired == [True]
        assert not (data / "children").exists()
    finally:
        straggler.kill()
        straggler.wait()
        waiter.join(10)
        lock.release()


def test_servers_die_with_a_killed_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from podium.embedded import EmbeddedValkey;"
            "v = EmbeddedValkey(Path(sys.argv[1]), persist=False); v.start();"
            "print(v.proc.pid, flush=True); time.sleep(60)",
            str(tmp_path / "valkey"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_gone(child)
    finally:
        parent.kill()
        parent.wait()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
