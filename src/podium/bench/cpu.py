"""CPU time of the processes under test (server, PostgreSQL, Valkey) over a window.

A process group is a root process and its descendants. Its CPU counter is the user and
system time of every live member plus the time of the children each member has reaped
(the kernel's cutime/cstime): a PostgreSQL backend that exits mid-window moves from its
own counter into the postmaster's reaped-children time, so nothing is lost or counted
twice; a backend that appears mid-window is counted from zero. The same holds for the
workers of `podium serve --workers N`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import psutil

PROCESSES = ("server", "postgres", "valkey")


class Group:
    """One root process and its descendants, found by pid or by listening port."""

    def __init__(self, root: psutil.Process | None) -> None:
        self.root = root

    @classmethod
    def of_pids(cls, pids: Iterable[int | None]) -> list[Group]:
        out = []
        for pid in pids:
            if pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                out.append(cls(psutil.Process(pid)))
        return out

    @classmethod
    def listening_on(cls, url: str | None) -> Group:
        """The process listening on the TCP port of `url` on this machine, or an empty
        group (reported as n/a) when the URL is remote, a socket path, or not visible."""
        if not url:
            return cls(None)
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            return cls(None)
        if port is None or parts.hostname not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
            return cls(None)
        try:
            conns = psutil.net_connections(kind="tcp")
        except (psutil.Error, OSError):
            return cls(None)
        pids = {
            c.pid
            for c in conns
            if c.pid and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        }
        procs = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
        # Children may inherit the listening socket: the root is the one whose parent
        # is not itself a listener.
        roots = [p for p in procs if p.ppid() not in pids]
        return cls(roots[0] if roots else None)

    def cpu_s(self) -> float | None:
        """The group's CPU counter in seconds; None when the root is gone or unreadable."""
        if self.root is None:
            return None
        try:
            members = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return None
        total = 0.0
        for proc in members:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                if proc is self.root:
                    return None
                continue  # exited between the listing and the read: its reaper has it
            total += t.user + t.system + t.children_user + t.children_system
        return total


class Meter:
    """Samples every group at the start and the end of a measured window."""

    def __init__(self, groups: dict[str, list[Group]]) -> None:
        self.groups = groups
        self._start: dict[str, float | None] = {}
        self._end: dict[str, float | None] = {}
        self.started = self.ended = 0.0

    def _sample(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, groups in self.groups.items():
            values = [g.cpu_s() for g in groups]
            known = [v for v in values if v is not None]
            out[name] = sum(known) if known and len(known) == len(values) else None
        return out

    def start(self) -> Meter:
        self._start = self._sample()
        self.started = time.monotonic()
        return self

    def stop(self) -> Meter:
        self._end = self._sample()
        self.ended = time.monotonic()
        return self

    def cpu_s(self, name: str) -> float | None:
        a, b = self._start.get(name), self._end.get(name)
        return None if a is None or b is None else b - a

    def report(self, ops: int, per: str) -> dict[str, Any]:
        """CPU seconds and µs per operation of each process; "n/a" where not found."""
        out: dict[str, Any] = {"ops": ops, "per": per}
        total = 0.0
        complete = True
        for name in self.groups:
            cpu = self.cpu_s(name)
            if cpu is None:
                out[f"{name}_cpu_s"] = out[f"{name}_us_per_op"] = "n/a"
                complete = False
                continue
            total += cpu
            out[f"{name}_cpu_s"] = round(cpu, 3)
            out[f"{name}_us_per_op"] = round(cpu * 1e6 / ops, 1) if ops else None
        out["total_us_per_op"] = round(total * 1e6 / ops, 1) if ops and complete else "n/a"
        return out


def meter_for(server_pids: Iterable[int | None], redis_url: str, database_url: str) -> Meter:
    """A meter over the given server processes and the stores behind the two URLs."""
    return Meter(
        {
            "server": Group.of_pids(server_pids),
            "postgres": [Group.listening_on(database_url)],
            "valkey": [Group.listening_on(redis_url)],
        }
    )
