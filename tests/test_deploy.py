"""The production shape: compose.yaml, deploy/haproxy.cfg and deploy/Dockerfile are
checked by parsing them (no Docker engine here), and the same topology runs for real:
two `podium serve` processes on one Redis and PostgreSQL behind a loopback proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from podium.embedded import free_port
from tests.conftest import TEST_PASSWORD, RunningApp, Stores, drop_test_state, make_settings
from tests.ws_helpers import recv, recv_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
HAPROXY = ROOT / "deploy" / "haproxy.cfg"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SECRET_NAMES = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY$", re.IGNORECASE)
# `${VAR}` or `${VAR:?message}`: the value must come from the environment; a default
# (`${VAR:-...}`) would be a secret written in the file.
ENV_REFERENCE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?\?[^}]*)?\}$")


# --- compose.yaml ------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def podium_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in doc["services"].items()
        if isinstance(svc.get("build"), dict)
        and svc["build"].get("dockerfile") == "deploy/Dockerfile"
    }


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def test_compose_runs_stores_replicas_and_a_load_balancer() -> None:
    doc = compose()
    services = doc["services"]
    replicas = podium_services(doc)
    assert len(replicas) >= 2
    redis = next(n for n, s in services.items() if re.search(r"valkey|redis", s.get("image", "")))
    postgres = next(n for n, s in services.items() if "postgres" in s.get("image", ""))
    lb = next(n for n, s in services.items() if re.search(r"haproxy|nginx", s.get("image", "")))

    # PostgreSQL keeps its data in a named volume and says when it is ready.
    volumes = [v.split(":")[0] for v in services[postgres]["volumes"]]
    assert any(v in doc["volumes"] for v in volumes)
    for store in (redis, postgres):
        assert services[store]["healthcheck"]["test"]

    for name, replica in replicas.items():
        env = _environment(replica)
        assert env["PODIUM_ENV"] == "production", name
        assert env["REDIS_URL"].startswith("redis://") and f"@{redis}:" not in env["REDIS_URL"]
        assert f"//{redis}:" in env["REDIS_URL"], name
        assert f"@{postgres}:5432/" in env["DATABASE_URL"], name
        assert "SECRET_KEY" in env, name
        assert _depends(replica) == {redis: "service_healthy", postgres: "service_healthy"}
        # Only the load balancer is reachable from outside.
        assert "ports" not in replica, name

    # One published port, on the load balancer, which waits for healthy replicas.
    published = [p for svc in services.values() for p in svc.get("ports", [])]
    assert published == services[lb]["ports"] and len(published) == 1
    assert _depends(services[lb]) == {name: "service_healthy" for name in replicas}
    mounts = " ".join(services[lb]["volumes"])
    assert "./deploy/haproxy.cfg:" in mounts


def test_compose_holds_no_secret() -> None:
    doc = compose()
    for name, service in doc["services"].items():
        for key, value in _environment(service).items():
            if SECRET_NAMES.search(key):
                assert ENV_REFERENCE.match(value), f"{name}.{key} must come from the environment"
            # A password inside a URL too.
            if match := re.match(r"^\w+://[^:/@]+:([^@]+)@", value):
                assert ENV_REFERENCE.match(match[1]), f"{name}.{key} holds a password"
    assert not re.search(r":-[^}]*\}", COMPOSE.read_text().split("services:", 1)[0]), (
        "no defaults for secrets"
    )


# --- deploy/haproxy.cfg ------------------------------------------------------------------


def haproxy_sections() -> dict[str, list[str]]:
    """ "kind name" -> its lines, comments stripped."""
    sections: dict[str, list[str]] = {}
    current = None
    for raw in HAPROXY.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = line.strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line.strip())
    return sections


def test_haproxy_balances_every_replica_and_passes_websockets() -> None:
    sections = haproxy_sections()
    defaults = next(lines for name, lines in sections.items() if name.startswith("defaults"))
    frontend = next(lines for name, lines in sections.items() if name.startswith("frontend"))
    backend_name, backend = next(
        (name, lines) for name, lines in sections.items() if name.startswith("backend")
    )
    everything = defaults + backend
    assert "mode http" in defaults
    # Once upgraded, a WebSocket is a tunnel: `timeout tunnel` decides how long it lives.
    tunnel = next(line for line in everything if line.startswith("timeout tunnel"))
    assert re.fullmatch(r"timeout tunnel (\d+h|\d{4,}s|\d+m)", tunnel), tunnel
    assert not any("http-server-close" in line or "httpclose" in line for line in everything)
    assert any(re.fullmatch(r"balance (roundrobin|leastconn)", line) for line in backend)

    # Health checks ask /readyz and expect a 200.
    assert "option httpchk" in backend or any("httpchk" in line for line in backend)
    assert any(re.search(r"http-check send .*uri /readyz", line) for line in backend)
    assert "http-check expect status 200" in backend
    servers = {line.split()[2].rsplit(":", 1)[0] for line in backend if line.startswith("server ")}
    assert servers == set(podium_services(compose()))
    checked = any(line.startswith("default-server") and " check" in line for line in backend)
    assert checked or all(" check" in line for line in backend if line.startswith("server "))

    # The frontend listens on the port compose publishes and sends traffic to the backend.
    lb_ports = [p for s in compose()["services"].values() for p in s.get("ports", [])]
    container_port = lb_ports[0].rsplit(":", 1)[1]
    assert f"bind :{container_port}" in frontend
    assert f"default_backend {backend_name.split()[1]}" in frontend


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_config() -> None:
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- deploy/Dockerfile -------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_builds_with_uv_and_runs_unprivileged() -> None:
    steps = dockerfile_instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: build with uv, run without it"
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "uv sync --locked" in runs
    assert "--no-dev" in runs and "--no-group embedded" in runs

    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0")
    health = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert health and "/readyz" in health[-1]
    cmd = [rest for word, rest in final if word == "CMD"][-1]
    assert re.search(r'"podium",\s*"serve"', cmd)
    assert '"0.0.0.0"' in cmd and '"--proxy-headers"' in cmd
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "PODIUM_ENV=production" in env
    assert "SECRET_KEY" not in env, "the key comes from the environment at run time"
    # Local state (the dev secret key, embedded databases) and .env never reach a build.
    ignored = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert {".env", ".podium", ".venv", ".git"} <= set(ignored)


# --- the same topology, without Docker ----------------------------------------------------


class RoundRobinProxy:
    """A loopback TCP proxy: each new connection goes to the next backend in turn."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = free_port()
        self.chosen: list[int] = []  # backend index of each connection, in order
        self._turn = itertools.cycle(range(len(backends)))
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RoundRobinProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = next(self._turn)
        self.chosen.append(index)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backends[index])
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
            self._tasks.discard(task)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


@contextlib.asynccontextmanager
async def replica(env: dict[str, str], port: int, log: Path) -> AsyncIterator[int]:
    """`python -m podium serve --port P` as a child process, ready when /readyz is 200."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "podium",
            "serve",
            "--port",
            str(port),
            "--proxy-headers",
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(30):
            while True:
                assert proc.returncode is None, log.read_text()[-2000:]
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)  # startup polling, not waiting for a push
        yield port
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _readyz_count(port: int) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "podium_http_requests_total"
                and labels.get("route") == "/readyz"
                and labels.get("status") == "200"
            ):
                return sample.value
    return 0.0


def _fresh_connections() -> httpx.Limits:
    # No keep-alive: every request opens a new connection, so the proxy alternates.
    return httpx.Limits(max_keepalive_connections=0)


async def test_two_replicas_behind_a_proxy(stores: Stores, tmp_path: Path) -> None:
    settings = make_settings(stores)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PODIUM_", "REDIS_", "DATA"))},
        "REDIS_URL": stores.redis_url,
        "DATABASE_URL": stores.database_url,
        "SECRET_KEY": "deploy-test-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "PODIUM_ENV": "production",
        "PODIUM_DB_SCHEMA": settings.db_schema,
        "PODIUM_REDIS_PREFIX": settings.redis_prefix,
        "PODIUM_LOG_LEVEL": "warning",
    }
    ports = [free_port(), free_port()]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for i, port in enumerate(ports):
                (tmp_path / f"r{i}").mkdir()
                replica_env = {**env, "PODIUM_DATA_DIR": str(tmp_path / f"r{i}" / "data")}
                await stack.enter_async_context(
                    replica(replica_env, port, tmp_path / f"r{i}" / "serve.log")
                )
            proxy = await stack.enter_async_context(RoundRobinProxy(ports))
            base = f"http://127.0.0.1:{proxy.port}"
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base, timeout=10, limits=_fresh_connections())
            )

            # /readyz through the proxy reaches both replicas: each counts its own.
            before = [await _readyz_count(p) for p in ports]
            for _ in range(4):
                r = await http.get("/readyz")
                assert r.status_code == 200 and r.json()["status"] == "ready"
            after = [await _readyz_count(p) for p in ports]
            assert [a - b for a, b in zip(after, before, strict=True)] == [2.0, 2.0]
            assert proxy.chosen[-4:] in ([0, 1, 0, 1], [1, 0, 1, 0])

            await _write_on_one_reaches_socket_on_other(http, proxy, settings.db_schema, stores)
    finally:
        await drop_test_state(settings)


async def _write_on_one_reaches_socket_on_other(
    http: httpx.AsyncClient, proxy: RoundRobinProxy, schema: str, stores: Stores
) -> None:
    from podium.api import ws

    paths = {getattr(route, "path", None) for route in ws.routes}
    if "/ws/v1/scoreboard" not in paths:
        pytest.skip("/ws/v1/scoreboard does not exist yet")
    from websockets.asyncio.client import connect

    name = f"d{uuid.uuid4().hex[:10]}"
    r = await http.post(
        "/api/v1/auth/register",
        json={"username": name, "email": f"{name}@example.com", "password": TEST_PASSWORD},
    )
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    conn = await asyncpg.connect(stores.database_url)
    try:
        await conn.execute(f'UPDATE "{schema}".users SET role = $1 WHERE id = $2', "admin", user_id)
    finally:
        await conn.close()
    r = await http.post("/api/v1/auth/login", json={"username": name, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    game = f"g{uuid.uuid4().hex[:8]}"
    r = await http.post("/api/v1/games", json={"id": game, "name": "Deploy"}, headers=auth)
    assert r.status_code == 201, r.text

    url = f"ws://127.0.0.1:{proxy.port}/ws/v1/scoreboard?game={game}"
    async with connect(url, additional_headers=auth, open_timeout=5, compression=None) as sock:
        socket_replica = proxy.chosen[-1]
        snapshot = await recv(sock)
        assert snapshot["type"] == "snapshot" and snapshot["entries"] == []
        r = await http.post(
            "/api/v1/scores",
            json={"game": game, "event_id": str(uuid.uuid4()), "score": 4242},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        assert proxy.chosen[-1] != socket_replica, "the write went to the socket's replica"
        diff = await recv_until(sock, lambda m: m.get("type") == "diff", timeout=5)
        assert [(row["user_id"], row["score"]) for row in diff["upserts"]] == [(user_id, 4242)]


# --- the client address and /metrics at the edge ------------------------------------------


def test_haproxy_replaces_forwarded_for_and_normalises_before_denying_metrics() -> None:
    sections = haproxy_sections()
    everything = [line for lines in sections.values() for line in lines]
    frontend = next(lines for name, lines in sections.items() if name.startswith("frontend"))
    # Appending (`option forwardfor`) would keep whatever the client sent in front.
    assert not any(line.startswith("option forwardfor") for line in everything)
    assert "http-request set-header X-Forwarded-For %[src]" in frontend
    normalize = [line.split()[-1] for line in frontend if "normalize-uri" in line]
    assert {"percent-decode-unreserved", "path-merge-slashes", "path-strip-dotdot"} <= set(
        normalize
    )
    deny = next(i for i, line in enumerate(frontend) if "deny" in line and "/metrics" in line)
    assert re.search(r"\{ path,url_dec(,lower)? -m beg /metrics \}", frontend[deny])
    # Normalised first: a rule only sees the path once it has its one spelling.
    last_normalize = max(i for i, line in enumerate(frontend) if "normalize-uri" in line)
    assert last_normalize < deny


def test_compose_trusts_forwarded_for_from_haproxy_only() -> None:
    doc = compose()
    lb = doc["services"]["lb"]
    lb_address = lb["networks"]["default"]["ipv4_address"]
    subnet = doc["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(lb_address) in ipaddress.ip_network(subnet)
    for name, replica in podium_services(doc).items():
        env = _environment(replica)
        assert "FORWARDED_ALLOW_IPS" not in env, name
        assert env["PODIUM_TRUSTED_PROXIES"] == lb_address, name


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET `target` byte for byte (an HTTP client would normalise it first)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: podium\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _loopback_haproxy_cfg(port: int, backend: int) -> str:
    """deploy/haproxy.cfg with its frontend on `port` and one loopback server."""
    out, skip = [], False
    for raw in HAPROXY.read_text().splitlines():
        line = raw.strip()
        if raw and not raw[0].isspace():
            skip = line.startswith("resolvers")
        if skip or line.startswith(("server ", "default-server", "log ", "maxconn")):
            continue  # maxconn: this machine's file limit is lower than production's
        if line.startswith("bind "):
            raw = f"    bind 127.0.0.1:{port}"
        out.append(raw)
        if line.startswith("backend"):
            out.append(f"    server podium-1 127.0.0.1:{backend} check inter 200ms")
    return "\n".join(out) + "\n"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
async def test_real_haproxy_denies_every_spelling_of_metrics(
    server: RunningApp, tmp_path: Path
) -> None:
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(_loopback_haproxy_cfg(port, server.port))
    proc = await asyncio.create_subprocess_exec(
        "haproxy", "-db", "-f", str(cfg),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            async with asyncio.timeout(20):
                while True:
                    assert proc.returncode is None, "haproxy exited"
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)  # startup polling
            # Straight to the replica, from loopback, the metrics are there ...
            direct = await http.get(f"http://127.0.0.1:{server.port}/metrics")
            assert direct.status_code == 200
            # ... and through HAProxy no spelling reaches them.
            for path in ("/metrics", "/%6Detrics", "//metrics", "/metrics/", "/metrics?x",
                         "/METRICS", "/./metrics", "/x/../metrics", "/%2Fmetrics"):  # fmt: skip
                status, body = await raw_get(port, path)
                assert status == 404, (path, status)
                assert b"podium_http_requests_total" not in body, path
    finally:
        proc.terminate()
        await proc.wait()
