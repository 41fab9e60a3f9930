"""`podium serve --workers N` as a user runs it: a real parent, real workers, one port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from podium.embedded import free_port
from podium.instance import HEADER
from podium.settings import MAX_WORKERS, SettingsError, load_settings, parse_workers
from tests.conftest import TEST_PASSWORD, Stores, drop_test_state, make_settings
from tests.test_cli import clean_env, servers_of, wait_no_servers
from tests.ws_helpers import recv, recv_until

# --- the setting ----------------------------------------------------------------------


def test_workers_setting_and_auto() -> None:
    assert load_settings({}, Path("/nonexistent")).workers == 1
    assert load_settings({"PODIUM_WORKERS": "3"}, Path("/nonexistent")).workers == 3
    cpus = len(os.sched_getaffinity(0))
    assert parse_workers("auto") == parse_workers(" AUTO ") == min(cpus, MAX_WORKERS)
    for bad in ("0", "-1", "two", "", str(MAX_WORKERS + 1)):
        with pytest.raises(SettingsError, match="PODIUM_WORKERS"):
            load_settings({"PODIUM_WORKERS": bad or " "}, Path("/nonexistent"))
    # An empty value is unset, like every other setting.
    assert load_settings({"PODIUM_WORKERS": ""}, Path("/nonexistent")).workers == 1


# --- processes ------------------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] == "Z" else int(fields[1])


def workers_of(parent: int) -> set[int]:
    """The live worker processes of a `serve --workers` parent (see podium.workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _ppid(int(entry.name)) != parent:
            continue
        with contextlib.suppress(OSError):
            if b"podium.workers" in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
    return found


def workers_in(cwd: Path) -> set[int]:
    """Live worker processes working in `cwd`, whoever their parent is now (an orphan is
    adopted by init, so the parent's children would not show it)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _ppid(int(entry.name)) is None:
            continue
        with contextlib.suppress(OSError):
            if (
                Path(os.readlink(entry / "cwd")) == cwd.resolve()
                and b"podium.workers" in (entry / "cmdline").read_bytes()
            ):
                found.add(int(entry.name))
    return found


async def wait_for(predicate: object, what: str, timeout: float = 30) -> None:
    """Poll a process condition with a deadline (process state, not a push)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


class Parent:
    """`podium serve --workers 2` in a subprocess, its output in a log file."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def stop(self, sig: int, timeout: float = 45) -> int:
        self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"the parent ignored signal {sig} for {timeout}s:\n{self.output()}")

    async def identities(self, want: int = 2, timeout: float = 60) -> dict[str, int]:
        """instance id -> pid of every worker, once `want` of them answered /healthz."""
        seen: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each time
        async with httpx.AsyncClient(timeout=5, limits=limits) as http:
            while len(seen) < want:
                assert time.monotonic() < deadline, f"saw only {seen}:\n{self.output()}"
                with contextlib.suppress(httpx.TransportError):
                    r = await http.get(self.url + "/healthz")
                    body = r.json()
                    assert r.headers[HEADER] == body["instance"]
                    seen[body["instance"]] = body["pid"]
        return seen


@contextlib.asynccontextmanager
async def parent(
    env: dict[str, str], cwd: Path, name: str, *args: str, ready: bool = True
) -> AsyncIterator[Parent]:
    port = free_port()
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "podium", "serve", "--port", str(port), *args,
            env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    serve = Parent(proc, port, log)
    try:
        if ready:
            async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(90):
                while True:
                    assert proc.returncode is None, serve.output()
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(serve.url + "/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)  # startup polling, not waiting for a push
        yield serve
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def store_env(stores: Stores, tmp_path: Path, schema: str, prefix: str) -> dict[str, str]:
    return clean_env(
        REDIS_URL=stores.redis_url,
        DATABASE_URL=stores.database_url,
        SECRET_KEY="workers-test-" + uuid.uuid4().hex + uuid.uuid4().hex,
        PODIUM_DB_SCHEMA=schema,
        PODIUM_REDIS_PREFIX=prefix,
        PODIUM_DATA_DIR=str(tmp_path / "data"),
        PODIUM_BCRYPT_ROUNDS="4",
        PODIUM_LOG_LEVEL="warning",
    )


async def admin_and_game(http: httpx.AsyncClient, stores: Stores, schema: str) -> tuple[dict, str]:
    """Register an admin (promoted in the database) and create a game; (auth, game)."""
    name = f"w{uuid.uuid4().hex[:10]}"
    r = await http.post(
        "/api/v1/auth/register",
        json={"username": name, "email": f"{name}@example.com", "password": TEST_PASSWORD},
    )
    assert r.status_code == 201, r.text
    conn = await asyncpg.connect(stores.database_url)
    try:
        await conn.execute(
            f'UPDATE "{schema}".users SET role = $1 WHERE id = $2', "admin", r.json()["id"]
        )
    finally:
        await conn.close()
    r = await http.post("/api/v1/auth/login", json={"username": name, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    game = f"g{uuid.uuid4().hex[:8]}"
    r = await http.post("/api/v1/games", json={"id": game, "name": "Workers"}, headers=auth)
    assert r.status_code == 201, r.text
    return auth, game


async def one_socket_per_worker(
    port: int, game: str, auth: dict, want: int, stack: contextlib.AsyncExitStack
) -> dict[str, ClientConnection]:
    """Open scoreboard sockets until one landed on each worker (the kernel picks)."""
    url = f"ws://127.0.0.1:{port}/ws/v1/scoreboard?game={game}"
    sockets: dict[str, ClientConnection] = {}
    for _ in range(64):  # each lands on a given worker with p = 1/want
        sock = await connect(url, additional_headers=auth, open_timeout=10, compression=None)
        assert sock.response is not None
        worker = sock.response.headers[HEADER]
        if worker in sockets:
            await sock.close()
            continue
        sockets[worker] = await stack.enter_async_context(sock)
        assert (await recv(sock, timeout=10))["type"] == "snapshot"
        if len(sockets) == want:
            return sockets
    pytest.fail(f"64 sockets reached only the workers {sorted(sockets)}")


async def test_a_write_on_one_worker_reaches_a_socket_on_the_other(
    stores: Stores, tmp_path: Path
) -> None:
    """Two workers on one port: each has sockets; a write through either worker is
    pushed by both; a killed worker is restarted and serves; SIGTERM stops them all."""
    settings = make_settings(stores)
    env = store_env(stores, tmp_path, settings.db_schema, settings.redis_prefix)
    try:
        async with (
            parent(env, tmp_path, "serve", "--workers", "2") as serve,
            contextlib.AsyncExitStack() as stack,
        ):
            ids = await serve.identities()
            pids = workers_of(serve.proc.pid)
            assert set(ids.values()) == pids and len(pids) == 2, serve.output()

            fresh = httpx.Limits(max_keepalive_connections=0)
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=serve.url, timeout=10, limits=fresh)
            )
            auth, game = await admin_and_game(http, stores, settings.db_schema)
            sockets = await one_socket_per_worker(serve.port, game, auth, 2, stack)

            # Writes until one went through each worker: each is pushed on both sockets.
            through: set[str] = set()
            score = 0
            while through != set(ids):
                score += 1
                assert score < 64, f"64 writes reached only {through}"
                r = await http.post(
                    "/api/v1/scores",
                    json={"game": game, "event_id": str(uuid.uuid4()), "score": score},
                    headers=auth,
                )
                assert r.status_code == 200, r.text
                writer = r.headers[HEADER]
                through.add(writer)
                [other] = set(ids) - {writer}
                await _pushed(sockets[other], score)  # through the pub/sub, the point
                await _pushed(sockets[writer], score)

            # SIGKILL one worker: the parent restarts it, and the new one serves.
            victim = next(iter(pids))
            os.kill(victim, signal.SIGKILL)
            await wait_for(lambda: victim not in workers_of(serve.proc.pid), "the kill")
            await wait_for(lambda: len(workers_of(serve.proc.pid)) == 2, "a restart")
            [reborn] = workers_of(serve.proc.pid) - pids
            again = await serve.identities()
            assert reborn in again.values() and victim not in again.values()
            assert "worker exited; restarting" in serve.output()

            for sock in sockets.values():
                await sock.close()
            assert await serve.stop(signal.SIGTERM) == 128 + signal.SIGTERM
            assert workers_in(tmp_path) == set(), serve.output()
    finally:
        await drop_test_state(settings)


async def _pushed(sock: ClientConnection, score: int) -> None:
    def has(msg: dict) -> bool:
        return msg.get("type") == "diff" and any(r["score"] == score for r in msg["upserts"])

    await recv_until(sock, has, timeout=10)


async def test_sigint_and_sigkill_of_the_parent_leave_no_process(tmp_path: Path) -> None:
    """Embedded stores start once, in the parent; Ctrl-C stops the workers and then the
    stores; a killed parent takes its workers and stores with it (parent-death signal)."""
    data = tmp_path / "data"
    env = clean_env(PODIUM_DATA_DIR=str(data), PODIUM_BCRYPT_ROUNDS="4", PODIUM_WORKERS="2")
    async with parent(env, tmp_path, "serve-1") as serve:
        await serve.identities()
        assert len(workers_of(serve.proc.pid)) == 2
        stores = servers_of(data)
        # One Valkey and one PostgreSQL, the parent's (not one per worker).
        assert {_ppid(pid) for pid, name in stores if "valkey" in name or " -D " in name} == {
            serve.proc.pid
        }
        assert await serve.stop(signal.SIGINT) == 130
        assert workers_in(tmp_path) == set(), serve.output()
        assert servers_of(data) == [], "SIGINT left store servers behind"
        assert "worker exited" not in serve.output()

    async with parent(env, tmp_path, "serve-2") as serve:
        await serve.identities()
        assert len(workers_of(serve.proc.pid)) == 2
        serve.proc.kill()
        await serve.proc.wait()
        await wait_for(lambda: workers_in(tmp_path) == set(), "the orphan workers to stop")
    wait_no_servers(data)


async def test_a_worker_that_cannot_start_stops_the_parent(stores: Stores, tmp_path: Path) -> None:
    """A database role allowed one connection: the parent migrates through it, then
    every worker's pool (two connections at least) is refused. The parent says so and
    exits instead of restarting them forever, and leaves no worker behind."""
    settings = make_settings(stores)
    role = f"r{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(stores.database_url)
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{role}' CONNECTION LIMIT 1")
        await admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO {role}')
        parts = urlsplit(stores.database_url)
        limited = parts._replace(netloc=f"{role}:{role}@{parts.hostname}:{parts.port}")
        env = store_env(stores, tmp_path, settings.db_schema, settings.redis_prefix)
        env["DATABASE_URL"] = urlunsplit(limited)
        async with parent(env, tmp_path, "serve", "--workers", "2", ready=False) as serve:
            code = await asyncio.wait_for(serve.proc.wait(), 90)
            assert code == 2, serve.output()
            assert "before serving" in serve.output()
            assert workers_in(tmp_path) == set()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_a_taken_port_is_refused_before_any_worker_starts(
    stores: Stores, tmp_path: Path
) -> None:
    settings = make_settings(stores)
    env = store_env(stores, tmp_path, settings.db_schema, settings.redis_prefix)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "podium", "serve", "--workers", "2", "--port", str(port),
                env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 90)
            assert proc.returncode == 2, (out, err)
            assert f"cannot listen on 127.0.0.1:{port}" in err.decode()
            assert workers_in(tmp_path) == set()
        finally:
            await drop_test_state(settings, redis=False)
