"""Hostile identity: spoofed addresses, lock-outs, token races, revocation, leaks in logs.

Every test here failed on the code before its fix (issue 9, part "ident").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from podium.embedded import free_port
from podium.settings import Settings
from tests.boards_helpers import create_game
from tests.conftest import (
    TEST_PASSWORD,
    Account,
    RunningApp,
    Stores,
    app_with,
    drop_test_state,
    make_admin,
    make_settings,
    register_and_login,
    running_app,
)
from tests.test_deploy import pipe, replica
from tests.ws_helpers import closed_with, open_ws, recv, send


@contextlib.asynccontextmanager
async def two_instances(stores: Stores, **overrides: object) -> AsyncIterator[list[RunningApp]]:
    """Two app instances on one schema and key prefix, as behind a load balancer."""
    settings = make_settings(stores, **overrides)
    try:
        async with running_app(settings) as first, running_app(settings) as second:
            yield [first, second]
    finally:
        await drop_test_state(settings)


async def cli(settings: Settings, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """`podium ARGS` against the stores, schema and key prefix of `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PODIUM_", "REDIS_"))}
    env.update(
        REDIS_URL=str(settings.redis_url),
        DATABASE_URL=str(settings.database_url),
        PODIUM_DB_SCHEMA=settings.db_schema,
        PODIUM_REDIS_PREFIX=settings.redis_prefix,
        PODIUM_DATA_DIR=str(settings.data_dir),
        PODIUM_BCRYPT_ROUNDS="4",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "podium", *args, env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(90):
        out, err = await proc.communicate(stdin)
    return int(proc.returncode or 0), out.decode(), err.decode()


def from_address(app: RunningApp, address: str) -> httpx.AsyncClient:
    """A client whose TCP source address is `address` (all of 127/8 is loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=app.url + "/api/v1", transport=transport, timeout=10)


# --- 1. the client address comes from a trusted proxy only --------------------------------


class AppendingProxy:
    """A loopback HTTP proxy like HAProxy's `option forwardfor`: it adds its view of the
    client in its own X-Forwarded-For line and keeps whatever the client sent."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AppendingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")[0]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend)
        try:
            # One request per connection (the clients below do not keep connections alive).
            head = await reader.readuntil(b"\r\n\r\n")
            head = head[:-2] + f"X-Forwarded-For: {peer}\r\n\r\n".encode()
            up_writer.write(head)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)


async def _registrations(base: str, address: str, count: int) -> list[int]:
    """`count` registrations from source `address`, each claiming a new X-Forwarded-For."""
    transport = httpx.AsyncHTTPTransport(
        local_address=address, limits=httpx.Limits(max_keepalive_connections=0)
    )
    codes = []
    async with httpx.AsyncClient(base_url=base, transport=transport, timeout=10) as http:
        for i in range(count):
            name = f"x{uuid.uuid4().hex[:10]}"
            body = {"username": name, "email": f"{name}@example.com", "password": TEST_PASSWORD}
            spoof = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
            r = await http.post("/api/v1/auth/register", json=body, headers=spoof)
            codes.append(r.status_code)
    return codes


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    stores: Stores, tmp_path: Path
) -> None:
    settings = make_settings(stores)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PODIUM_", "REDIS_"))},
        "REDIS_URL": str(settings.redis_url),
        "DATABASE_URL": str(settings.database_url),
        "SECRET_KEY": "proxy-test-" + "y" * 40,
        "PODIUM_DB_SCHEMA": settings.db_schema,
        "PODIUM_REDIS_PREFIX": settings.redis_prefix,
        "PODIUM_DATA_DIR": str(tmp_path / "data"),
        "PODIUM_BCRYPT_ROUNDS": "4",
        "PODIUM_REGISTRATIONS_PER_MINUTE": "2",
        "PODIUM_LOG_LEVEL": "warning",
        "PODIUM_TRUSTED_PROXIES": "127.0.0.1",
        # What compose.yaml used to set: Podium must not let uvicorn read it.
        "FORWARDED_ALLOW_IPS": "*",
    }
    try:
        async with (
            replica(env, free_port(), tmp_path / "serve.log") as port,
            AppendingProxy(port) as proxy,
        ):
            direct = f"http://127.0.0.1:{port}"
            # A direct client naming any address it likes is still itself.
            assert await _registrations(direct, "127.0.0.2", 3) == [201, 201, 429]
            # Through the proxy, the proxy's view of the client counts, not what the
            # client claims, and not the proxy's own address.
            via = f"http://127.0.0.1:{proxy.port}"
            assert await _registrations(via, "127.0.0.3", 3) == [201, 201, 429]
            assert await _registrations(via, "127.0.0.4", 1) == [201]
    finally:
        await drop_test_state(settings)


# --- 7. /metrics answers only to the scraper ------------------------------------------------


async def test_metrics_only_for_allowed_addresses_or_the_scrape_token(stores: Stores) -> None:
    token = "scrape-" + uuid.uuid4().hex
    async with app_with(stores, metrics_token=token) as app:
        for address, headers, status in [
            ("127.0.0.1", {}, 200),
            ("127.0.0.2", {}, 404),
            ("127.0.0.2", {"Authorization": "Bearer wrong"}, 404),
            ("127.0.0.2", {"Authorization": f"Bearer {token}"}, 200),
        ]:
            transport = httpx.AsyncHTTPTransport(local_address=address)
            async with httpx.AsyncClient(base_url=app.url, transport=transport) as http:
                for path in ("/metrics", "/%6Detrics", "//metrics", "/metrics/", "/metrics?x"):
                    r = await http.get(path, headers=headers, follow_redirects=True)
                    leaked = b"podium_http_requests_total" in r.content
                    if status == 404:
                        # No spelling gets the metrics (some reach other routes).
                        assert not leaked, (address, path)
                        if path in ("/metrics", "/%6Detrics", "/metrics?x"):
                            assert r.status_code == 404, (address, path)
                    elif path == "/metrics":
                        assert r.status_code == 200 and leaked, (address, path)


# --- 6 and 10. logs hold no credential, and a refused handshake is no error -----------------


def serve_env(settings: Settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PODIUM_", "REDIS_"))}
    env.update(
        REDIS_URL=str(settings.redis_url),
        DATABASE_URL=str(settings.database_url),
        SECRET_KEY="log-test-" + "z" * 40,
        PODIUM_DB_SCHEMA=settings.db_schema,
        PODIUM_REDIS_PREFIX=settings.redis_prefix,
        PODIUM_DATA_DIR=str(tmp_path / "data"),
        PODIUM_BCRYPT_ROUNDS="4",
        **extra,
    )
    return env


async def _send_invalid_utf8(port: int, target: str) -> int:
    """Open a socket by hand, send one text frame that is not UTF-8; the close code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        payload, mask = b"\xff\xfe\xfd", os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        while True:  # server frames are unmasked: opcode, length, payload
            first, size = await asyncio.wait_for(reader.readexactly(2), 5)
            body = await reader.readexactly(size & 0x7F)
            if first & 0x0F == 0x8:
                return int.from_bytes(body[:2], "big")
    finally:
        writer.close()


async def test_logs_hold_no_credential_and_refusals_are_not_errors(
    stores: Stores, tmp_path: Path
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    settings = make_settings(stores)
    log = tmp_path / "serve.log"
    psk = "psk_" + uuid.uuid4().hex + "SeCrEt"
    try:
        async with replica(
            serve_env(settings, tmp_path, PODIUM_LOG_LEVEL="debug"), free_port(), log
        ) as port:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base + "/api/v1") as http:
                account = await register_and_login(http)
                # The credential in a query string and in headers, over HTTP too.
                await http.get(f"/auth/me?token={account.access_token}")
                await http.get("/auth/me", headers={"Authorization": f"Bearer {psk}"})
            refusals = [
                # Refused by closing before accept: a bad credential (HTTP 403).
                f"/ws/v1/scoreboard?game=nope&token={psk}",
                # Refused with a denial response: a good token, a board that is not (404),
                # and a missing parameter (400).
                f"/ws/v1/scoreboard?game=no-such-game&token={account.access_token}",
                f"/ws/v1/scoreboard?token={account.access_token}",
            ]
            for target in refusals:
                with pytest.raises(InvalidStatus):
                    await connect(f"ws://127.0.0.1:{port}{target}", open_timeout=5)
            # A client's invalid UTF-8 text frame is the client's fault: closed 1007, and
            # not an error-level traceback anyone can flood the log with.
            close = await _send_invalid_utf8(port, f"/ws/v1/reports?token={account.access_token}")
            assert close == 1007
            # A request after the refusals: every line about them is written by now.
            async with httpx.AsyncClient(base_url=base) as http:
                assert (await http.get("/readyz")).status_code == 200
    finally:
        await drop_test_state(settings)
    text = log.read_text()
    for secret in (account.access_token, account.refresh_token, psk, psk[4:]):
        assert secret not in text
    assert "[redacted]" in text  # uvicorn's WebSocket lines were there, without the secret
    levels = [json.loads(line).get("level") for line in text.splitlines() if line.startswith("{")]
    errors = [line for line in text.splitlines() if '"level": "error"' in line]
    assert levels and not errors, errors


# --- 9. create-admin keeps the password out of argv ----------------------------------------


async def test_create_admin_reads_the_password_from_stdin(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    name = f"root{uuid.uuid4().hex[:8]}"
    password = "stdin-only-" + uuid.uuid4().hex[:8]
    args = ("create-admin", "--username", name, "--email", f"{name}@example.com")
    code, out, err = await cli(server.settings, *args, stdin=password.encode() + b"\n")
    assert code == 0, err
    assert password not in out + err
    r = await client.post("/auth/login", json={"username": name, "password": password})
    assert r.status_code == 200 and r.json()["user"]["role"] == "admin", r.text
    # Nothing on stdin: refused, nothing created.
    other = ("create-admin", "--username", name + "x", "--email", f"x{name}@example.com")
    code, out, err = await cli(server.settings, *other)
    assert code != 0 and "password" in err
    code, out, err = await cli(server.settings, "create-admin", "--help")
    assert "visible to other users" in " ".join(out.split())


# --- 8. the embedded stores want a password ------------------------------------------------


async def test_embedded_valkey_refuses_a_client_without_the_password(tmp_path: Path) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import AuthenticationError, ResponseError

    from podium.embedded import EmbeddedValkey

    valkey = EmbeddedValkey(tmp_path / "valkey", persist=False)
    valkey.start()
    try:
        assert valkey.password and valkey.password in valkey.url
        secret_file = tmp_path / "valkey.password"
        assert secret_file.stat().st_mode & 0o077 == 0
        anonymous = aioredis.Redis(host="127.0.0.1", port=valkey.port)
        try:
            with pytest.raises((AuthenticationError, ResponseError)):
                await anonymous.set("k", "v")
        finally:
            await anonymous.aclose()
        client = aioredis.Redis.from_url(valkey.url)
        try:
            assert await client.set("k", "v")
        finally:
            await client.aclose()
        # Nor is it on the command line, which every local user can read.
        cmdline = Path(f"/proc/{valkey.proc.pid}/cmdline").read_bytes() if valkey.proc else b""
        assert valkey.password.encode() not in cmdline
    finally:
        valkey.stop()


async def test_embedded_postgres_wants_the_password_and_upgrades_a_trust_dir(
    tmp_path: Path,
) -> None:
    import asyncpg

    from podium.embedded import EmbeddedPostgres

    pgdata = tmp_path / "postgres"
    anonymous = "postgresql://postgres@127.0.0.1:{port}/podium"

    async def check(pg: EmbeddedPostgres) -> None:
        with pytest.raises(
            (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
        ):
            await asyncpg.connect(anonymous.format(port=pg.port), password="")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(anonymous.format(port=pg.port), password="guess")
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    pg = EmbeddedPostgres(pgdata, durable=False)
    pg.start()
    try:
        assert (tmp_path / "postgres.password").stat().st_mode & 0o077 == 0
        await check(pg)
    finally:
        pg.stop()
    # What an older Podium left behind: every local connection trusted, no password.
    hba = pgdata / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    (tmp_path / "postgres.password").unlink()
    again = EmbeddedPostgres(pgdata, durable=False)
    again.start()
    try:
        assert "trust" not in [line.split()[-1] for line in hba.read_text().splitlines()
                               if line.strip() and not line.startswith("#")]  # fmt: skip
        await check(again)
    finally:
        again.stop()


def _create_admin_on_a_terminal(env: dict[str, str], args: list[str], answers: list[str]) -> str:
    """Run `podium ARGS` with a pseudo-terminal as its controlling terminal; answer each
    prompt in turn; return everything it wrote."""
    import fcntl
    import select
    import subprocess
    import termios

    master, slave = os.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "podium", *args], env=env,
        stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True, preexec_fn=take_terminal,
    )  # fmt: skip
    os.close(slave)
    seen, pending = b"", list(answers)
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, seen
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if pending and seen.endswith(b": "):  # a prompt, waiting
                os.write(master, pending.pop(0).encode() + b"\n")
        assert proc.wait(60) == 0, seen
    finally:
        os.close(master)
    return seen.decode(errors="replace")


async def test_create_admin_prompts_twice_on_a_terminal(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    name = f"tty{uuid.uuid4().hex[:8]}"
    password = "typed-twice-" + uuid.uuid4().hex[:8]
    settings = server.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PODIUM_", "REDIS_"))}
    env.update(
        DATABASE_URL=str(settings.database_url),
        PODIUM_DB_SCHEMA=settings.db_schema,
        PODIUM_DATA_DIR=str(settings.data_dir),
        PODIUM_BCRYPT_ROUNDS="4",
    )
    args = ["create-admin", "--username", name, "--email", f"{name}@example.com"]
    seen = await asyncio.to_thread(_create_admin_on_a_terminal, env, args, [password, password])
    assert "Password" in seen and "again" in seen and password not in seen  # no echo
    r = await client.post("/auth/login", json={"username": name, "password": password})
    assert r.status_code == 200 and r.json()["user"]["role"] == "admin", r.text


# --- 2. failed logins from one address do not lock the owner out ---------------------------


async def test_attacker_address_cannot_lock_out_the_owner(stores: Stores) -> None:
    async with (
        app_with(stores, login_attempts_per_minute=3) as app,
        from_address(app, "127.0.0.1") as owner,
        from_address(app, "127.0.0.2") as attacker,
    ):
        victim = await register_and_login(owner)
        wrong = {"username": victim.username, "password": "guess-guess"}
        codes = [(await attacker.post("/auth/login", json=wrong)).status_code for _ in range(20)]
        assert codes[0] == 401 and codes[-1] == 429, codes
        r = await attacker.post("/auth/login", json=wrong)
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60

        right = {"username": victim.username, "password": TEST_PASSWORD}
        r = await owner.post("/auth/login", json=right)
        assert r.status_code == 200, r.text


# --- 3. concurrent reuse of one refresh token leaves no live token ------------------------


async def _answered_or_waiting(
    server: RunningApp, tasks: list[asyncio.Task[httpx.Response]]
) -> None:
    """Until every request has answered or waits on a PostgreSQL lock (with a timeout)."""
    assert server.services is not None
    async with asyncio.timeout(20):
        while True:
            waiting = await server.services.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            )
            if sum(t.done() for t in tasks) + waiting >= len(tasks):
                return
            await asyncio.sleep(0.02)


async def test_concurrent_refreshes_leave_the_family_dead(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    account = await register_and_login(client)
    assert server.services is not None
    body = {"refresh_token": account.refresh_token}
    # Hold the user's row: whatever part of a refresh needs it waits, the rest runs on,
    # which opens the window between spending a token and storing its successor.
    async with server.services.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", account.id)
        tasks = [asyncio.create_task(client.post("/auth/refresh", json=body)) for _ in range(10)]
        await _answered_or_waiting(server, tasks)
    answers = await asyncio.gather(*tasks)
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) <= 1 and set(codes) <= {200, 401}, codes
    pairs = [r.json() for r in answers if r.status_code == 200]
    # The successors first: using the spent original again would revoke them anyway.
    refresh_tokens = [*(p["refresh_token"] for p in pairs), account.refresh_token]
    access_tokens = [*(p["access_token"] for p in pairs), account.access_token]
    for token in refresh_tokens:
        r = await client.post("/auth/refresh", json={"refresh_token": token})
        assert r.status_code == 401, r.text
    for token in access_tokens:
        r = await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, r.text
    live = await server.services.pool.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL",
        account.id,
    )
    assert live == 0


# --- 11. an empty string is not "given": the constraints live in the Structs ---------------


async def test_empty_strings_are_refused_by_the_struct_and_documented(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    account = await register_and_login(client)
    r = await client.post(
        "/auth/login", json={"username": account.username, "email": "", "password": "x" * 8}
    )
    assert r.status_code == 422 and set(r.json()["error"]["details"]) == {"email"}, r.text
    r = await client.post("/auth/login", json={"username": "", "password": TEST_PASSWORD})
    assert r.status_code == 422 and set(r.json()["error"]["details"]) == {"username"}, r.text
    r = await client.post("/auth/refresh", json={"refresh_token": ""})
    assert r.status_code == 422, r.text
    r = await client.post("/auth/register", json={"username": "", "email": "", "password": ""})
    assert r.status_code == 422
    assert set(r.json()["error"]["details"]) == {"username", "email", "password"}

    async with httpx.AsyncClient(base_url=server.url) as http:
        schemas = (await http.get("/openapi.json")).json()["components"]["schemas"]
    register, login = schemas["RegisterIn"]["properties"], schemas["LoginIn"]["properties"]
    assert register["username"]["minLength"] == 3 and "pattern" in register["username"]
    assert "pattern" in register["email"] and register["password"]["minLength"] == 8
    assert any(
        alt.get("minLength") == 1 for alt in login["email"].get("anyOf", [login["email"]])
    ), login["email"]


# --- 4. a revoked service credential stops on every instance, sockets included -------------


async def test_revoked_service_credential_closes_its_sockets_everywhere(stores: Stores) -> None:
    async with (
        two_instances(stores) as apps,
        httpx.AsyncClient(base_url=apps[0].url + "/api/v1", timeout=10) as http,
    ):
        admin = await make_admin(apps[0], http)
        player = await register_and_login(http)
        game = (await create_game(http, admin, policy="authoritative"))["id"]
        settings = apps[0].settings
        name = f"arena-{uuid.uuid4().hex[:6]}"
        code, out, err = await cli(settings, "service-token", "--name", name, "--games", game)
        assert code == 0, err
        secret = out.strip()

        sockets = [await open_ws(app, "add-score", secret) for app in apps]
        try:
            for ws in sockets:
                event = str(uuid.uuid4())
                score = {"type": "score", "game": game, "event_id": event, "score": 5}
                await send(ws, {**score, "user_id": player.id})
                assert (await recv(ws))["type"] == "ack"
            code, out, err = await cli(settings, "service-token", "--name", name, "--revoke")
            assert code == 0, err
            for ws in sockets:
                assert await closed_with(ws) == 4003
        finally:
            for ws in sockets:
                await ws.close()
        headers = {"Authorization": f"Bearer {secret}"}
        for app in apps:
            r = await http.post(
                f"{app.url}/api/v1/scores",
                json={
                    "game": game,
                    "event_id": str(uuid.uuid4()),
                    "score": 9,
                    "user_id": player.id,
                },
                headers=headers,
            )
            assert r.status_code == 401, r.text


# --- 5. a voided user stops everywhere; an admin cannot void itself -------------------------


async def test_voided_user_is_signed_out_everywhere(stores: Stores) -> None:
    async with (
        two_instances(stores) as apps,
        httpx.AsyncClient(base_url=apps[0].url + "/api/v1", timeout=10) as http,
    ):
        admin = await make_admin(apps[0], http)
        cheat = await register_and_login(http)
        game = (await create_game(http, admin))["id"]
        sockets = [await open_ws(app, "scoreboard", cheat, game=game) for app in apps]
        try:
            for ws in sockets:
                assert (await recv(ws))["type"] == "snapshot"
            r = await http.post(f"/admin/users/{cheat.id}/void", headers=admin.headers)
            assert r.status_code == 200, r.text
            for ws in sockets:
                assert await closed_with(ws) == 4003
        finally:
            for ws in sockets:
                await ws.close()
        for app in apps:
            r = await http.get(f"{app.url}/api/v1/auth/me", headers=cheat.headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "voided", r.text
        r = await http.post("/auth/refresh", json={"refresh_token": cheat.refresh_token})
        assert r.status_code == 401
        login = {"username": cheat.username, "password": TEST_PASSWORD}
        assert (await http.post("/auth/login", json=login)).status_code == 401


async def test_an_admin_cannot_void_itself(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    r = await client.post(f"/admin/users/{admin.id}/void", headers=admin.headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "self_void", r.text
    assert (await client.get("/auth/me", headers=admin.headers)).status_code == 200


def test_trusted_proxies_must_be_addresses_never_everyone() -> None:
    from podium.settings import SettingsError, load_settings

    env = {"PODIUM_TRUSTED_PROXIES": "10.0.0.5, 172.28.0.0/24", "PODIUM_METRICS_ALLOW": "::1"}
    loaded = load_settings(env, dotenv=Path("/nonexistent"))
    assert loaded.trusted_proxies == ("10.0.0.5", "172.28.0.0/24")
    assert loaded.metrics_allow == ("::1",)
    assert load_settings({}, dotenv=Path("/nonexistent")).trusted_proxies == ()
    for bad in ("*", "proxy.internal", "10.0.0.5,*"):
        with pytest.raises(SettingsError):
            load_settings({"PODIUM_TRUSTED_PROXIES": bad}, dotenv=Path("/nonexistent"))


def test_a_revocation_heard_while_a_socket_is_set_up_is_remembered() -> None:
    from podium.auth.revocation import RecentRevocations

    recent = RecentRevocations(size=3, keep=60)
    recent.add("user:1", now=100.0)
    # A socket that authenticated before the revocation and registers after it.
    assert recent.since(("fam", "user:1"), 99.5)
    # One that authenticated after it was refused by the denylist, not here.
    assert not recent.since(("fam", "user:1"), 100.5)
    assert not recent.since(("", "user:2"), 0.0)
    # Bounded in size and in time.
    for i in range(2, 6):
        recent.add(f"user:{i}", now=100.0 + i)
    assert not recent.since(("user:1",), 0.0) and recent.since(("user:5",), 0.0)
    recent.add("user:9", now=1000.0)
    assert not recent.since(("user:5",), 0.0) and recent.since(("user:9",), 0.0)
