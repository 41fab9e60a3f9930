"""Helpers for the fault pass: stores we may kill, and a load that keeps writing and
watching through the faults while it records everything a client could observe."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from podium.bench.harness import Account, Server
from podium.embedded import EmbeddedPostgres, EmbeddedValkey

# Close codes of docs/protocol.md a socket may get while a store or an instance fails.
# 1006 (no close frame) is what a client sees when the instance's process dies.
CLOSES_ON_STORE_FAULT = {1001, 1012, 4009}
CLOSES_ON_CRASH = CLOSES_ON_STORE_FAULT | {1006}


def _kill_group(proc: Any) -> None:
    """SIGKILL a server and every process of its group (PostgreSQL's backends too):
    a crash, not a shutdown."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


class FaultStores:
    """A private Valkey and PostgreSQL, never the machine's: the fault pass kills them.

    PostgreSQL is durable (fsync and synchronous commit on): the pass checks that an
    acknowledged write survives a crash, which a throwaway cluster does not promise.
    """

    def __init__(self, base: Path) -> None:
        self.valkey = EmbeddedValkey(base / "valkey", persist=False)
        self.postgres = EmbeddedPostgres(base / "postgres", durable=True)
        self.faults: list[str] = []

    def start(self) -> None:
        self.valkey.start()
        self.postgres.start()

    def stop(self) -> None:
        self.postgres.stop()
        self.valkey.stop()

    @property
    def redis_url(self) -> str:
        return self.valkey.url

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def crash_valkey(self) -> None:
        _kill_group(self.valkey.proc)
        self.faults.append("valkey SIGKILL")

    def restart_valkey(self) -> None:
        """Back on the same port, empty (no persistence)."""
        self.valkey = EmbeddedValkey(self.valkey.data_dir, persist=False, port=self.valkey.port)
        self.valkey.start()
        self.faults.append("valkey restarted empty")

    def crash_postgres(self) -> None:
        _kill_group(self.postgres.proc)
        self.faults.append("postgres SIGKILL")

    def restart_postgres(self) -> None:
        """Back on the same port and data dir: crash recovery replays the WAL."""
        self.postgres = EmbeddedPostgres(
            self.postgres.pgdata, durable=True, port=self.postgres.port
        )
        self.postgres.start(timeout=120)
        self.faults.append("postgres restarted")


@dataclass
class Board:
    """A scoreboard client's copy of the top, kept as docs/protocol.md says."""

    seq: int | None = None
    rows: dict[int, tuple[int, int]] = field(default_factory=dict)  # user -> (rank, score)

    def top(self) -> list[tuple[int, int]]:
        return [(u, s) for u, (_, s) in sorted(self.rows.items(), key=lambda kv: kv[1][0])]


@dataclass
class Observed:
    """Everything the load saw; the fault pass asserts on it."""

    acked: set[str] = field(default_factory=set)
    sent: int = 0
    http_status: Counter[int] = field(default_factory=Counter)
    ws_errors: Counter[str] = field(default_factory=Counter)
    transport_errors: int = 0
    closes: Counter[int | None] = field(default_factory=Counter)
    handshake_refusals: Counter[int] = field(default_factory=Counter)
    read_status: Counter[int] = field(default_factory=Counter)
    handshakes: int = 0
    snapshots: int = 0
    pushes: int = 0
    gaps: int = 0
    # For each socket opened again after a close: snapshots/synced it got.
    resumed: list[list[str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "acked": len(self.acked),
            "sent": self.sent,
            "http_status": dict(self.http_status),
            "ws_errors": dict(self.ws_errors),
            "transport_errors": self.transport_errors,
            "closes": dict(self.closes),
            "handshake_refusals": dict(self.handshake_refusals),
            "handshakes": self.handshakes,
            "read_status": dict(self.read_status),
            "snapshots": self.snapshots,
            "pushes": self.pushes,
            "gaps": self.gaps,
            "reconnects": len(self.resumed),
        }


class Load:
    """HTTP and add-score writers, readers, scoreboard / scores / my-score subscribers
    and a reconnecting socket, on every live instance; a client whose instance dies
    moves to another one, as real clients do."""

    def __init__(
        self,
        servers: list[Server],
        writers: list[Account],
        watcher: Account,
        games: list[str],
        *,
        subscribers: int = 4,
        pace: float = 0.05,
    ) -> None:
        self.servers = list(servers)
        self.alive = list(servers)
        self.writers = writers
        self.watcher = watcher
        self.games = games
        self.pace = pace
        self.n_subscribers = subscribers
        self.seen = Observed()
        self.boards: list[tuple[str, Board, list[ClientConnection | None]]] = []
        self.pages: list[tuple[str, dict[str, Any]]] = []
        self.ranks: list[tuple[str, Account, dict[str, Any]]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stoppable: list[asyncio.Task[None]] = []  # writers, readers, churn
        self._changed = asyncio.Condition()
        self._rng = random.Random(9)

    def server(self, i: int) -> Server:
        return self.alive[i % len(self.alive)]

    def lose(self, server: Server) -> None:
        """Clients stop choosing `server` (its process is gone)."""
        self.alive.remove(server)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, pred: Callable[[Observed], bool], timeout: float = 60) -> None:
        """Until `pred(observed)` holds; no sleeping, every observation wakes us."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: pred(self.seen))

    async def start(self) -> None:
        # Each kind of client is spread over the instances on its own, so every
        # instance has writers of both kinds and subscribers of both kinds.
        for i, account in enumerate(self.writers):
            job = self._http_writer if i % 2 else self._ws_writer
            self._stoppable.append(asyncio.create_task(job(i // 2, account)))
        for i in range(self.n_subscribers):
            game = self.games[(i // 2) % len(self.games)]
            if i % 2:
                page: dict[str, Any] = {}
                self.pages.append((game, page))
                self._tasks.append(asyncio.create_task(self._scores(i // 2, game, page)))
            else:
                board = Board()
                holder: list[ClientConnection | None] = [None]
                self.boards.append((game, board, holder))
                task = self._scoreboard(i // 2, game, board, holder)
                self._tasks.append(asyncio.create_task(task))

        # Two writers also watch their own rank, on different instances.
        for i, account in enumerate(self.writers[:2]):
            view: dict[str, Any] = {}
            self.ranks.append((self.games[i % len(self.games)], account, view))
            self._tasks.append(asyncio.create_task(self._my_score(i, *self.ranks[-1])))
        # Readers and a socket that connects again and again: reads fall back to
        # PostgreSQL and handshakes go on while Redis is away.
        for i in range(len(self.alive)):
            self._stoppable.append(asyncio.create_task(self._reader(i)))
            self._stoppable.append(asyncio.create_task(self._churn(i)))
        self._tasks += self._stoppable

    async def stop_writers(self) -> None:
        """Stop the writers, readers and churn; the subscribers keep watching."""
        self._stop.set()
        await asyncio.gather(*self._stoppable)

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _score_body(self) -> dict[str, Any]:
        return {
            "game": self._rng.choice(self.games),
            "event_id": str(uuid.uuid4()),
            "score": self._rng.randrange(1, 1000),
        }

    async def _http_writer(self, i: int, account: Account) -> None:
        n = i
        while not self._stop.is_set():
            server = self.server(n)
            async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
                while not self._stop.is_set() and server in self.alive:
                    body = self._score_body()
                    self.seen.sent += 1
                    try:
                        r = await http.post("/api/v1/scores", json=body, headers=account.headers)
                    except httpx.HTTPError:
                        self.seen.transport_errors += 1
                        await self._notify()
                        break
                    self.seen.http_status[r.status_code] += 1
                    if r.status_code == 200:
                        self.seen.acked.add(body["event_id"])
                    await self._notify()
                    await asyncio.sleep(self.pace)  # the write rate, not a wait for a state
            n += 1
            await asyncio.sleep(self.pace)

    async def _reader(self, i: int) -> None:
        n = i
        while not self._stop.is_set():
            server = self.server(n)
            n += 1
            async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
                while not self._stop.is_set() and server in self.alive:
                    path = f"/api/v1/leaderboards/{self._rng.choice(self.games)}?limit=10"
                    try:
                        r = await http.get(path, headers=self.watcher.headers)
                    except httpx.HTTPError:
                        self.seen.transport_errors += 1
                        break
                    self.seen.read_status[r.status_code] += 1
                    await self._notify()
                    await asyncio.sleep(self.pace)
            await asyncio.sleep(self.pace)

    async def _churn(self, i: int) -> None:
        """Open a scoreboard socket, take its first message, close; again."""
        n = i
        while not self._stop.is_set():
            server = self.server(n)
            url = f"{server.ws_url}/ws/v1/scoreboard?game={self._rng.choice(self.games)}"
            try:
                async with connect(
                    url, additional_headers=self.watcher.headers, open_timeout=15
                ) as ws:
                    self.seen.handshakes += 1
                    first = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    if first.get("type") != "snapshot":
                        self.seen.ws_errors[f"first message {first.get('type')}"] += 1
            except ConnectionClosed as exc:
                self.seen.closes[exc.rcvd.code if exc.rcvd else 1006] += 1
                n += 1
            except InvalidStatus as exc:
                self.seen.handshake_refusals[exc.response.status_code] += 1
            except (OSError, InvalidHandshake, TimeoutError):
                self.seen.transport_errors += 1
                n += 1
            await self._notify()
            await asyncio.sleep(self.pace)

    async def _ws_writer(self, i: int, account: Account) -> None:
        n = i
        while not self._stop.is_set():
            server = self.server(n)
            n += 1
            try:
                async with connect(
                    f"{server.ws_url}/ws/v1/add-score",
                    additional_headers=account.headers,
                    open_timeout=15,
                    compression=None,
                ) as ws:
                    await self._write_over(ws)
            except ConnectionClosed as exc:
                self.seen.closes[exc.rcvd.code if exc.rcvd else 1006] += 1
            except InvalidStatus as exc:
                self.seen.handshake_refusals[exc.response.status_code] += 1
            except (OSError, InvalidHandshake, TimeoutError):
                self.seen.transport_errors += 1
            await self._notify()
            await asyncio.sleep(self.pace)

    async def _write_over(self, ws: ClientConnection) -> None:
        while not self._stop.is_set():
            body = {"type": "score", **self._score_body()}
            self.seen.sent += 1
            await ws.send(json.dumps(body))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if reply.get("event_id") == body["event_id"]:
                    break
            if reply["type"] == "ack":
                self.seen.acked.add(body["event_id"])
            else:
                self.seen.ws_errors[reply.get("code", "?")] += 1
            await self._notify()
            await asyncio.sleep(self.pace)

    async def _scoreboard(
        self, i: int, game: str, board: Board, holder: list[ClientConnection | None]
    ) -> None:
        n, again = i, False
        while True:
            server = self.server(n)
            n += 1
            query = f"game={game}" + (f"&since={board.seq}" if board.seq is not None else "")
            got: list[str] = []
            try:
                async with connect(
                    f"{server.ws_url}/ws/v1/scoreboard?{query}",
                    additional_headers=self.watcher.headers,
                    open_timeout=15,
                    compression=None,
                ) as ws:
                    holder[0] = ws
                    if again:
                        self.seen.resumed.append(got)
                    if not await self._follow(ws, board, got):
                        self.seen.closes[ws.close_code] += 1  # the server closed cleanly
            except ConnectionClosed as exc:
                self.seen.closes[exc.rcvd.code if exc.rcvd else 1006] += 1
            except InvalidStatus as exc:
                self.seen.handshake_refusals[exc.response.status_code] += 1
            except (OSError, InvalidHandshake, TimeoutError):
                self.seen.transport_errors += 1
            holder[0] = None
            again = True
            await self._notify()
            await asyncio.sleep(self.pace)  # reconnect backoff

    async def _follow(self, ws: ClientConnection, board: Board, got: list[str]) -> bool:
        """Apply pushes until the server closes (False) or a gap makes us leave (True)."""
        async for raw in ws:
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "snapshot":
                got.append("snapshot")
                self.seen.snapshots += 1
                board.rows = {e["user_id"]: (e["rank"], e["score"]) for e in msg["entries"]}
                board.seq = msg["seq"]
            elif kind == "synced":
                got.append("synced")
                board.seq = msg["seq"]
            elif kind == "diff":
                self.seen.pushes += 1
                if msg["prev_seq"] != board.seq:
                    # Missed something: reconnect with since, as the protocol says.
                    self.seen.gaps += 1
                    await ws.close()
                    return True
                for user in msg["left"]:
                    board.rows.pop(user, None)
                for e in msg["upserts"]:
                    board.rows[e["user_id"]] = (e["rank"], e["score"])
                board.seq = msg["seq"]
            await self._notify()
        return False

    async def _my_score(self, i: int, game: str, account: Account, view: dict[str, Any]) -> None:
        def apply(msg: dict[str, Any]) -> None:
            if msg.get("type") == "rank":
                self.seen.pushes += 1
                view.update(rank=msg["rank"], score=msg["score"], total=msg["total"])

        await self._watch(i, f"/ws/v1/my-score?game={game}", account.headers, apply)

    async def _scores(self, i: int, game: str, page: dict[str, Any]) -> None:
        def apply(msg: dict[str, Any]) -> None:
            if msg.get("type") == "page":
                self.seen.pushes += 1
                page["entries"] = [(e["user_id"], e["score"]) for e in msg["entries"]]

        await self._watch(i, f"/ws/v1/scores?game={game}&limit=10", self.watcher.headers, apply)

    async def _watch(
        self,
        i: int,
        target: str,
        headers: dict[str, str],
        apply: Callable[[dict[str, Any]], None],
    ) -> None:
        """Keep one socket open on `target`, moving to the next instance after every
        close, handing each message to `apply`; count how each connection ended."""
        n = i
        while True:
            server = self.server(n)
            n += 1
            try:
                async with connect(
                    f"{server.ws_url}{target}",
                    additional_headers=headers,
                    open_timeout=15,
                    compression=None,
                ) as ws:
                    async for raw in ws:
                        apply(json.loads(raw))
                        await self._notify()
                self.seen.closes[ws.close_code] += 1  # the server closed cleanly
            except ConnectionClosed as exc:
                self.seen.closes[exc.rcvd.code if exc.rcvd else 1006] += 1
            except InvalidStatus as exc:
                self.seen.handshake_refusals[exc.response.status_code] += 1
            except (OSError, InvalidHandshake, TimeoutError):
                self.seen.transport_errors += 1
            await self._notify()
            await asyncio.sleep(self.pace)
