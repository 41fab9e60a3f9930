"""The `podium` command as a user runs it: real subprocesses, real stores."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from podium.auth.guards import authenticate_token
from podium.auth.tokens import TokenError
from podium.embedded import free_port
from tests.conftest import (
    TEST_PASSWORD,
    RunningApp,
    Stores,
    drop_test_state,
    make_settings,
    running_app,
)

CORE_COMMANDS = ("serve", "migrate", "create-admin", "service-token")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any Podium setting, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PODIUM_")
        and k not in ("REDIS_URL", "DATABASE_URL", "SECRET_KEY", "ACCESS_TOKEN_TTL")
    }
    env.update(extra)
    return env


def podium(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podium", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def apodium(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """`podium` without blocking the event loop that serves the test app."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "podium",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --- help -----------------------------------------------------------------------------


def test_help_for_every_command(tmp_path: Path) -> None:
    env = clean_env(PODIUM_DATA_DIR=str(tmp_path / "data"))
    top = podium("--help", env=env, cwd=tmp_path)
    assert top.returncode == 0
    listed = re.findall(r"^    ([a-z][a-z-]+)", top.stdout, re.MULTILINE)
    assert set(CORE_COMMANDS) <= set(listed), top.stdout
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "podium", name, "--help"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in listed
    }
    helps = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (name, err)
        assert out.startswith(f"usage: podium {name}"), (name, out)
        helps[name] = out
    assert "--host" in helps["serve"] and "--port" in helps["serve"]
    assert "--games" in helps["service-token"] and "--revoke" in helps["service-token"]
    assert "--username" in helps["create-admin"] and "--password" in helps["create-admin"]
    # Nothing was started by asking for help.
    assert not (tmp_path / "data").exists()


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = podium(env=clean_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: podium" in result.stderr


# --- migrate, create-admin, service-token against the test PostgreSQL -------------------


@contextlib.asynccontextmanager
async def schema_env(stores: Stores, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A fresh schema name and the environment that points the CLI at it."""
    schema = f"cli_{uuid.uuid4().hex[:10]}"
    env = clean_env(
        DATABASE_URL=stores.database_url,
        PODIUM_DB_SCHEMA=schema,
        PODIUM_DATA_DIR=str(tmp_path / "data"),
        PODIUM_BCRYPT_ROUNDS="4",
    )
    try:
        yield schema, env
    finally:
        conn = await asyncpg.connect(stores.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_migrate_applies_each_migration_once(stores: Stores, tmp_path: Path) -> None:
    async with schema_env(stores, tmp_path) as (schema, env):
        code, out, err = await apodium("migrate", env=env, cwd=tmp_path)
        assert code == 0, err
        assert re.match(r"applied \d+ migration\(s\): 001_accounts", out), out
        conn = await asyncpg.connect(stores.database_url)
        try:
            versions = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
        finally:
            await conn.close()
        assert "001_accounts" in {r["version"] for r in versions}
        code, out, err = await apodium("migrate", env=env, cwd=tmp_path)
        assert code == 0, err
        assert out.strip() == "applied 0 migration(s)"
    # With URLs set nothing embedded is started: the data dir stays untouched.
    assert not (tmp_path / "data").exists()


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL=f"postgresql://podium@127.0.0.1:{free_port()}/podium")
    result = podium("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("podium: error: cannot use the configured stores")
    assert "Traceback" not in result.stderr


async def test_create_admin_then_log_in_as_admin(stores: Stores, tmp_path: Path) -> None:
    async with schema_env(stores, tmp_path) as (schema, env):
        args = ("create-admin", "--username", "Boss", "--email", "boss@example.com")
        code, out, err = await apodium(*args, "--password", TEST_PASSWORD, env=env, cwd=tmp_path)
        assert code == 0, err
        assert re.match(r"created admin Boss \(id \d+\)", out), out
        assert TEST_PASSWORD not in out + err

        code, out, err = await apodium(*args, "--password", TEST_PASSWORD, env=env, cwd=tmp_path)
        assert code != 0 and "already taken" in err and "Traceback" not in err
        bad = ("create-admin", "--username", "x", "--email", "nope", "--password", "short")
        code, out, err = await apodium(*bad, env=env, cwd=tmp_path)
        assert code != 0
        assert "username" in err and "email" in err and "password" in err

        settings = make_settings(stores, db_schema=schema)
        try:
            async with (
                running_app(settings) as app,
                httpx.AsyncClient(base_url=app.url + "/api/v1") as http,
            ):
                r = await http.post(
                    "/auth/login", json={"username": "boss", "password": TEST_PASSWORD}
                )
                assert r.status_code == 200, r.text
                assert r.json()["user"]["role"] == "admin"
                me = await http.get(
                    "/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
                )
                assert me.json()["role"] == "admin"
        finally:
            await drop_test_state(settings)


async def test_service_token_authenticates_until_revoked(stores: Stores, tmp_path: Path) -> None:
    async with schema_env(stores, tmp_path) as (schema, env):
        settings = make_settings(stores, db_schema=schema)
        try:
            async with (
                running_app(settings) as app,
                httpx.AsyncClient(base_url=app.url + "/api/v1") as http,
            ):
                await _check_service_token(app, http, env, tmp_path)
        finally:
            await drop_test_state(settings)


async def _check_service_token(
    app: RunningApp, http: httpx.AsyncClient, env: dict[str, str], cwd: Path
) -> None:
    assert app.services is not None
    code, out, err = await apodium(
        "service-token", "--name", "arena-1", "--games", "chess, go", env=env, cwd=cwd
    )
    assert code == 0, err
    secret = out.strip()
    assert re.fullmatch(r"psk_[A-Za-z0-9_-]{40,}", secret), out

    principal = await authenticate_token(app.services, secret)
    assert principal.kind == "service"
    assert principal.games == ("chess", "go")
    assert principal.credential == "service:arena-1"
    assert not principal.is_admin
    # Authenticated (403: a user endpoint), where an unknown credential is 401.
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await http.get("/auth/me", headers=headers)).status_code == 403
    unknown = {"Authorization": f"Bearer psk_{'A' * 43}"}
    assert (await http.get("/auth/me", headers=unknown)).status_code == 401

    # Stored hashed: the secret itself is nowhere in the table.
    row = await app.services.pool.fetchrow(
        "SELECT secret_hash, games FROM service_credentials WHERE name = 'arena-1'"
    )
    assert bytes(row["secret_hash"]) == hashlib.sha256(secret.encode()).digest()
    dump = await app.services.pool.fetchval(
        "SELECT string_agg(t::text, ',') FROM service_credentials t"
    )
    assert secret not in dump

    code, out, err = await apodium(
        "service-token", "--name", "arena-1", "--games", "x", env=env, cwd=cwd
    )
    assert code != 0 and "exists" in err
    code, out, err = await apodium("service-token", "--name", "arena-2", env=env, cwd=cwd)
    assert code != 0 and "--games" in err

    code, out, err = await apodium(
        "service-token", "--name", "arena-1", "--revoke", env=env, cwd=cwd
    )
    assert code == 0, err
    assert "revoked" in out
    with pytest.raises(TokenError):
        await authenticate_token(app.services, secret)
    assert (await http.get("/auth/me", headers=headers)).status_code == 401
    code, out, err = await apodium(
        "service-token", "--name", "arena-1", "--revoke", env=env, cwd=cwd
    )
    assert code != 0 and "no active service credential" in err


# --- embedded mode: serve, stop, crash, restart -------------------------------------------


def servers_of(data_dir: Path) -> list[tuple[int, str]]:
    """Live (not zombie) processes working in `data_dir`.

    Valkey and PostgreSQL (and its backends) chdir into their data dirs; Valkey
    rewrites its command line, so the working directory is the mark to look for.
    """
    root = data_dir.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if cwd.is_relative_to(root) and state != "Z":
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def wait_no_servers(data_dir: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (left := servers_of(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"orphans survived: {left}"


class Serve:
    """`podium serve` in a subprocess, output to a log file."""

    def __init__(self, env: dict[str, str], cwd: Path, name: str) -> None:
        self.port = free_port()
        self.log = cwd / f"{name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "podium", "serve", "--port", str(self.port)],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"podium serve exited {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"/readyz not 200 within {timeout}s:\n{self.output()}")

    def stop(self, sig: int, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"podium serve ignored signal {sig} for {timeout}s:\n{self.output()}")

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", timeout=10)


@contextlib.contextmanager
def serving(env: dict[str, str], cwd: Path, name: str) -> Iterator[Serve]:
    serve = Serve(env, cwd, name)
    try:
        serve.wait_ready()
        yield serve
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait(10)


def test_embedded_serve_lifecycle(tmp_path: Path) -> None:
    """Create an admin with nothing running, serve, refuse a second serve, stop on
    SIGINT, SIGTERM and SIGKILL without orphans, and keep the data across restarts."""
    data = tmp_path / "data"
    env = clean_env(PODIUM_DATA_DIR=str(data), PODIUM_BCRYPT_ROUNDS="4")

    # Pure embedded create-admin: starts PostgreSQL for itself, then stops it.
    result = podium(
        "create-admin", "--username", "root", "--email", "root@example.com",
        "--password", TEST_PASSWORD, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "created admin root" in result.stdout
    assert servers_of(data) == []
    assert not (data / "run.json").exists()  # the lock was released, the URLs withdrawn

    with serving(env, tmp_path, "serve-1") as serve, serve.api() as http:
        assert {name for _, name in servers_of(data)}  # its servers run under the data dir
        r = http.post("/auth/login", json={"username": "root", "password": TEST_PASSWORD})
        assert r.status_code == 200 and r.json()["user"]["role"] == "admin"
        carol = {"username": "carol", "email": "carol@example.com", "password": TEST_PASSWORD}
        assert http.post("/auth/register", json=carol).status_code == 201
        login = http.post("/auth/login", json={"username": "carol", "password": TEST_PASSWORD})
        carol_token = login.json()["access_token"]

        # A second server on the same data dir is refused at once, naming the dir.
        started = time.monotonic()
        second = podium("serve", "--port", str(free_port()), env=env, cwd=tmp_path, timeout=30)
        assert second.returncode != 0
        assert "already running" in second.stderr and str(data) in second.stderr
        assert time.monotonic() - started < 10

        # A CLI command meanwhile uses the running server's stores.
        result = podium(
            "create-admin", "--username", "root2", "--email", "root2@example.com",
            "--password", TEST_PASSWORD, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        r = http.post("/auth/login", json={"username": "root2", "password": TEST_PASSWORD})
        assert r.status_code == 200

        started = time.monotonic()
        assert serve.stop(signal.SIGINT) == 130
        assert time.monotonic() - started < 10
    assert servers_of(data) == [], "SIGINT left servers behind"

    # Restart: the data and the signing key survived (the old token still works).
    with serving(env, tmp_path, "serve-2") as serve, serve.api() as http:
        me = http.get("/auth/me", headers={"Authorization": f"Bearer {carol_token}"})
        assert me.status_code == 200 and me.json()["username"] == "carol"
        assert len(servers_of(data)) >= 2
        # Killed outright: its servers follow it (parent-death signal) ...
        serve.stop(signal.SIGKILL)
    wait_no_servers(data)

    # ... and the next start recovers the data dir; SIGTERM stops it cleanly too.
    with serving(env, tmp_path, "serve-3") as serve, serve.api() as http:
        r = http.post("/auth/login", json={"username": "carol", "password": TEST_PASSWORD})
        assert r.status_code == 200
        assert serve.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert servers_of(data) == [], "SIGTERM left servers behind"
