"""`podium seed` as a user runs it: its progress bars on a terminal, none in a log."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from tests.conftest import Stores
from tests.test_cli import apodium, schema_env

ARGS = ("seed", "--users", "30", "--games", "2", "--months", "1", "--events-per-user", "2")
PHASES = ("users", "events", "rebuild redis")


def on_a_terminal(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run the seed with stderr on a pseudo-terminal; its exit code and what it showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "podium", *ARGS],
        cwd=cwd,
        env={**env, "TERM": "xterm", "COLUMNS": "120"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    shown = b""
    while True:  # read as it writes: a full terminal buffer would stop the seed
        try:
            data = os.read(master, 65536)
        except OSError:  # the seed closed its end
            break
        if not data:
            break
        shown += data
    os.close(master)
    return proc.wait(timeout=90), shown.decode(errors="replace")


async def test_seed_progress_only_when_stderr_is_a_terminal(stores: Stores, tmp_path: Path) -> None:
    prefix = f"seed{uuid.uuid4().hex[:8]}:"
    async with schema_env(stores, tmp_path) as (_, env):
        env = {**env, "REDIS_URL": stores.redis_url, "PODIUM_REDIS_PREFIX": prefix}
        try:
            code, out, err = await apodium(*ARGS, "--seed", "1", env=env, cwd=tmp_path)
            assert code == 0, err
            assert out.startswith("seeded 30 users, 2 games, 60 events"), out
            assert not any(phase in err for phase in PHASES), err
            assert "\x1b[" not in err  # no cursor moves or colours in a log either
            code, shown = await asyncio.to_thread(on_a_terminal, env, tmp_path)
            assert code == 0, shown
            assert all(phase in shown for phase in PHASES), shown
        finally:
            redis = aioredis.Redis.from_url(stores.redis_url)
            keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
