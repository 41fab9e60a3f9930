"""Who this process is: an instance id, its pid and, under `serve --workers N`, its worker.

Operators and tests tell the processes behind one port apart by it: every HTTP
response and WebSocket handshake carries the id in `x-podium-instance`, and /healthz
answers with all three.
"""

from __future__ import annotations

import os
import secrets

HEADER = "x-podium-instance"


class Instance:
    """The identity of the running process; renewed in a forked child."""

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        # Random, not the pid: pids repeat across restarts and hosts, ids do not.
        self.id = secrets.token_hex(6)
        self.pid = os.getpid()
        self.worker: int | None = None
        self.header = (HEADER.encode(), self.id.encode())


current = Instance()
# A fork is another process: without this both would answer with the parent's id.
os.register_at_fork(after_in_child=current.renew)


def set_worker(index: int) -> None:
    """Mark this process as worker `index` (0-based) of a `serve --workers` parent."""
    current.worker = index
