"""Start (or reach) the servers under test, and make users and games through the API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec

from podium.bench.cpu import Meter, meter_for
from podium.embedded import embedded_stores, free_port

BENCH_PASSWORD = "bench-password-1"

# Settings for servers the bench spawns. Limits meant for the public (writes per user
# per second, sockets per user, login throttling) would cap a load test made of a few
# accounts, so they are lifted; bcrypt runs at cost 4 because only account setup uses
# it, never the measured paths.
SERVER_ENV = {
    "PODIUM_WRITES_PER_SECOND_PER_USER": "10000000",
    "PODIUM_WRITES_PER_SECOND_PER_IP": "10000000",
    "PODIUM_LOGIN_ATTEMPTS_PER_MINUTE": "1000000",
    "PODIUM_WS_MAX_SOCKETS_PER_USER": "1000000",
    "PODIUM_WS_MESSAGES_PER_SECOND": "1000000",
    "PODIUM_REGISTRATIONS_PER_MINUTE": "1000000",
    "PODIUM_BCRYPT_ROUNDS": "4",
    # A 1M-user board takes longer to load than an access token lives.
    "PODIUM_ACCESS_TOKEN_TTL": "86400",
    "PODIUM_LOG_LEVEL": "warning",
}


class Account(msgspec.Struct):
    id: int
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Server(msgspec.Struct):
    url: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None


def pin(cpu: int | None) -> None:
    """Pin this process (and the children it starts later) to one CPU."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def raise_fd_limit() -> int:
    """Lift this process's open-files limit to its hard limit (the servers and
    subscriber processes it starts inherit it): 10,000 sockets need 10,000 fds."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _taskset(cpu: int | None) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


async def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + "/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} was not ready within {timeout:.0f}s")


class Env:
    """Stores and one or more `podium serve` processes, pinned to `server_cpu`."""

    def __init__(
        self,
        *,
        instances: int = 1,
        server_cpu: int | None = None,
        redis_url: str | None = None,
        database_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        workers: int = 1,
        python: str | None = None,
    ) -> None:
        self.instances = instances
        self.workers = workers
        # The interpreter that runs `podium serve` and the setup commands: another
        # checkout's venv measures that code with this bench (before/after).
        self.python = python or sys.executable
        self.server_cpu = server_cpu
        self.redis_url = redis_url
        self.database_url = database_url
        self.extra_env = extra_env or {}
        self.servers: list[Server] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="podium-bench-"))
        self.env: dict[str, str] = {}
        self._stores: contextlib.ExitStack | None = None
        self.admin: Account | None = None

    async def __aenter__(self) -> Env:
        self._stores = contextlib.ExitStack()
        urls = self._stores.enter_context(
            embedded_stores(
                self.tmp / "stores",
                need_redis=self.redis_url is None,
                need_postgres=self.database_url is None,
                durable=True,
            )
        )
        self.env = {
            **os.environ,
            **SERVER_ENV,
            **self.extra_env,
            "REDIS_URL": self.redis_url or urls["redis_url"],
            "DATABASE_URL": self.database_url or urls["database_url"],
            "SECRET_KEY": secrets.token_urlsafe(48),
            "PODIUM_DATA_DIR": str(self.tmp / "data"),
            "PODIUM_DB_SCHEMA": f"bench_{uuid.uuid4().hex[:8]}",
            "PODIUM_REDIS_PREFIX": f"bench{uuid.uuid4().hex[:8]}:",
        }
        self.cli("migrate")
        for _ in range(self.instances):
            port = free_port()
            proc = subprocess.Popen(
                self.serve_command(port),
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=open(self.tmp / f"server-{port}.log", "wb"),
            )
            self.servers.append(Server(f"http://127.0.0.1:{port}", proc))
        for server in self.servers:
            await wait_ready(server.url)
        self.admin = await self._make_admin()
        return self

    def serve_command(self, port: int) -> list[str]:
        """`podium serve` on `port`, pinned; `--workers` only when more than one, so a
        serve without the flag stays measurable."""
        workers = ["--workers", str(self.workers)] if self.workers > 1 else []
        return [*_taskset(self.server_cpu), self.python, "-m", "podium", "serve",
                "--port", str(port), *workers]  # fmt: skip

    def cli(self, *args: str) -> str:
        """Run `podium ARGS` against these stores (the server's interpreter); its stdout."""
        done = subprocess.run(
            [self.python, "-m", "podium", *args], env=self.env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"podium {args[0]} failed: {done.stderr[-2000:]}")
        return done.stdout

    def meter(self, servers: list[Server] | None = None) -> Meter:
        """A CPU meter over `servers` (default: all, with their workers), PostgreSQL
        and Valkey."""
        chosen = self.servers if servers is None else servers
        return meter_for([s.pid for s in chosen], self.env["REDIS_URL"], self.env["DATABASE_URL"])

    async def __aexit__(self, *exc: object) -> None:
        for server in self.servers:
            if server.proc and server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in self.servers:
            if server.proc:
                try:
                    server.proc.wait(15)
                except subprocess.TimeoutExpired:
                    server.proc.kill()
        if self._stores is not None:
            self._stores.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def _make_admin(self) -> Account:
        name = f"admin{uuid.uuid4().hex[:8]}"
        self.cli("create-admin", "--username", name, "--email", f"{name}@bench.invalid",
                 "--password", BENCH_PASSWORD)  # fmt: skip
        async with httpx.AsyncClient(base_url=self.servers[0].url + "/api/v1") as http:
            return await login(http, name)

    async def users(self, n: int, server: int = 0) -> list[Account]:
        """Register and log in `n` players through the API."""
        async with httpx.AsyncClient(
            base_url=self.servers[server].url + "/api/v1", timeout=60
        ) as http:
            sem = asyncio.Semaphore(16)

            async def one() -> Account:
                async with sem:
                    name = f"b{uuid.uuid4().hex[:12]}"
                    r = await http.post(
                        "/auth/register",
                        json={
                            "username": name,
                            "email": f"{name}@bench.invalid",
                            "password": BENCH_PASSWORD,
                        },
                    )
                    r.raise_for_status()
                    return await login(http, name)

            return list(await asyncio.gather(*(one() for _ in range(n))))

    async def game(self, **fields: object) -> str:
        assert self.admin is not None
        gid = f"bench-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(base_url=self.servers[0].url + "/api/v1") as http:
            r = await http.post(
                "/games", json={"id": gid, "name": gid, **fields}, headers=self.admin.headers
            )
            r.raise_for_status()
        return gid


async def login(http: httpx.AsyncClient, username: str, password: str = BENCH_PASSWORD) -> Account:
    r = await http.post("/auth/login", json={"username": username, "password": password})
    r.raise_for_status()
    body = r.json()
    return Account(body["user"]["id"], username, body["access_token"])


@contextlib.asynccontextmanager
async def floor_server(cpu: int | None) -> AsyncIterator[Server]:
    port = free_port()
    proc = subprocess.Popen(
        [*_taskset(cpu), sys.executable, "-m", "podium.bench.floor", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + 15
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("floor server did not start") from None
            await asyncio.sleep(0.05)
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(10)
