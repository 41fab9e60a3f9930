"""`podium serve --workers N`: N server processes on one port, supervised by this one.

The parent resolves the stores (embedded ones start there, once, before any worker),
migrates once, and holds the port: a bound socket that never listens, so the port is
reserved while workers restart and a port of 0 is resolved once. It then starts N
workers, `python -m podium.workers`, each reading its orders (settings, index) as JSON
on stdin, so the store passwords and the signing key never reach argv or the
environment. A worker binds its own SO_REUSEPORT socket on the port and runs the whole
app: its own writer, hub and pub/sub connection. The kernel spreads new connections
over the workers' listening sockets.

A worker that dies is restarted, with backoff. SIGINT or SIGTERM to the parent stops
every worker with SIGTERM (uvicorn's graceful shutdown: the sockets close with 1001
and the writer finishes its queued writes), then the stores. Workers run in their own
process group (a terminal's Ctrl-C reaches the parent only, which stops them in order)
with a parent-death signal, so a killed parent leaves no worker behind.

The worker pids are the parent's children whose command line is
`python -m podium.workers`; each also answers /healthz with its pid and index.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from podium import instance
from podium.cli_common import CliError
from podium.embedded import child_setup
from podium.settings import Settings

log = logging.getLogger("podium")

# A worker that served this long before dying starts the backoff afresh.
HEALTHY_SECONDS = 60.0
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# How long the workers' graceful shutdown may take before they are killed: uvicorn's
# own grace for open connections (5 s) plus the writer's drain.
STOP_SECONDS = 30.0


class Orders(msgspec.Struct, kw_only=True):
    """What a worker is told on stdin."""

    settings: Settings
    worker: int
    proxy_headers: bool
    ready_fd: int


def _dec_hook(type_: type, value: Any) -> Any:
    if type_ is Path:
        return Path(value)
    # msgspec's dec_hook protocol: NotImplementedError means "not a type I convert",
    # and msgspec turns it into a ValidationError naming the field.
    raise NotImplementedError(type_)


def encode_orders(orders: Orders) -> bytes:
    return msgspec.json.encode(orders, enc_hook=str)


def decode_orders(raw: bytes) -> Orders:
    return msgspec.json.decode(raw, type=Orders, dec_hook=_dec_hook)


def bind_shared(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT, not yet listening."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


class Worker:
    """One worker slot: its current process (if any) and its restart state."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.pidfd = -1
        self.ready_fd = -1  # the read end of the pipe the worker writes once it serves
        self.ready = False
        self.ever_ready = False
        self.started = 0.0
        self.failures = 0
        self.restart_at: float | None = None

    def spawn(self, orders: Orders) -> None:
        read_end, write_end = os.pipe()
        # pass_fds keeps the number: the worker writes to the same fd.
        orders = msgspec.structs.replace(orders, worker=self.index, ready_fd=write_end)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "podium.workers"],
                stdin=subprocess.PIPE,
                pass_fds=(write_end,),
                preexec_fn=child_setup(signal.SIGTERM, None, None),
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self.ready_fd = read_end
        self.pidfd = os.pidfd_open(self.proc.pid)
        self.ready = False
        self.started = time.monotonic()
        self.restart_at = None
        assert self.proc.stdin is not None
        # A few hundred bytes: the pipe takes them without blocking.
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(encode_orders(orders))
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()

    def reaped(self) -> int:
        """Wait for the exited process and forget it; its exit code."""
        assert self.proc is not None
        code = self.proc.wait()
        self._close_fds()
        self.proc = None
        return code

    def _close_fds(self) -> None:
        for fd in (self.pidfd, self.ready_fd):
            if fd >= 0:
                os.close(fd)
        self.pidfd = self.ready_fd = -1

    def schedule_restart(self, now: float) -> float:
        if self.ready and now - self.started >= HEALTHY_SECONDS:
            self.failures = 0
        delay = min(FIRST_BACKOFF * 2.0**self.failures, MAX_BACKOFF)
        self.failures += 1
        self.restart_at = now + delay
        return delay


def serve_workers(settings: Settings, count: int, *, proxy_headers: bool) -> int:
    """Run `count` workers on settings.host:port until SIGINT/SIGTERM; the stores are
    resolved and migrated already."""
    try:
        held = bind_shared(settings.host, settings.port)
    except OSError as exc:
        raise CliError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    with held:
        port = held.getsockname()[1]
        settings = msgspec.structs.replace(settings, port=port)
        orders = Orders(settings=settings, worker=0, proxy_headers=proxy_headers, ready_fd=-1)
        workers = [Worker(i) for i in range(count)]
        try:
            for worker in workers:
                worker.spawn(orders)
            _supervise(workers, orders, f"http://{settings.host}:{port}")
        finally:
            stop_workers(workers)
    return 0


def _supervise(workers: list[Worker], orders: Orders, url: str) -> None:
    announced = False
    while True:
        now = time.monotonic()
        for slot in workers:
            if slot.restart_at is not None and slot.restart_at <= now:
                slot.spawn(orders)
                log.info("worker restarted", extra={"worker": slot.index, "pid": _pid(slot)})
        waits = [w.restart_at - now for w in workers if w.restart_at is not None]
        by_fd = {w.pidfd: w for w in workers if w.pidfd >= 0}
        ready_fds = {w.ready_fd: w for w in workers if w.ready_fd >= 0}
        readable, _, _ = select.select(
            [*by_fd, *ready_fds], [], [], max(0.0, min(waits)) if waits else None
        )
        for fd in readable:
            if (ready := ready_fds.get(fd)) is not None:
                _on_ready(ready)
        if not announced and all(w.ever_ready for w in workers):
            announced = True
            log.info("serving", extra={"url": url, "workers": len(workers)})
        for fd in readable:
            if (exited := by_fd.get(fd)) is not None:
                _on_exit(exited)


def _on_ready(worker: Worker) -> None:
    # One byte once the worker listens; EOF alone means it died before that.
    if os.read(worker.ready_fd, 1):
        worker.ready = worker.ever_ready = True
        log.info("worker serving", extra={"worker": worker.index, "pid": _pid(worker)})
    os.close(worker.ready_fd)
    worker.ready_fd = -1


def _on_exit(worker: Worker) -> None:
    pid = _pid(worker)
    code = worker.reaped()
    if not worker.ever_ready:
        # It never served: a configuration or store problem that a restart won't fix,
        # as `serve` without workers exits on it too.
        raise CliError(f"worker {worker.index} (pid {pid}) exited with {code} before serving")
    delay = worker.schedule_restart(time.monotonic())
    log.warning(
        "worker exited; restarting",
        extra={"worker": worker.index, "pid": pid, "code": code, "in_s": delay},
    )


def _pid(worker: Worker) -> int | None:
    return worker.proc.pid if worker.proc is not None else None


def stop_workers(workers: list[Worker], timeout: float = STOP_SECONDS) -> None:
    """SIGTERM every worker, wait for them (killing any left at `timeout`), reap them.

    A second Ctrl-C or SIGTERM meanwhile kills them at once.
    """
    live = [w for w in workers if w.proc is not None]
    for worker in live:
        assert worker.proc is not None
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    try:
        for worker in live:
            assert worker.proc is not None
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop in time; killed", extra={"worker": worker.index})
                worker.proc.kill()
    finally:
        for worker in live:
            if worker.proc is not None:
                if worker.proc.poll() is None:
                    worker.proc.kill()
                worker.reaped()


# -- the worker process ------------------------------------------------------------------


class _WorkerTag(logging.Filter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def worker_main() -> int:
    """A worker: read the orders, bind the shared port, serve until SIGTERM."""
    import uvicorn

    from podium.app import create_app
    from podium.logs import setup_logging
    from podium.serving import uvicorn_config

    orders = decode_orders(sys.stdin.buffer.read())
    settings = orders.settings
    instance.set_worker(orders.worker)
    setup_logging(settings.log_level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(orders.worker))
    ready_fd = orders.ready_fd

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                os.write(ready_fd, b"1")
                os.close(ready_fd)

    sock = bind_shared(settings.host, settings.port)
    app = create_app(settings, migrated=True)
    server = Server(uvicorn_config(app, settings, proxy_headers=orders.proxy_headers))
    server.run(sockets=[sock])
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(worker_main())
