"""bcrypt hashing, always off the event loop (a cost-12 hash takes ~250 ms)."""

from __future__ import annotations

import functools

import bcrypt
from starlette.concurrency import run_in_threadpool


@functools.cache
def _dummy_hash(rounds: int) -> bytes:
    # A real hash of a random password at the configured cost: verifying against it
    # when the user does not exist takes as long as a real check, so timing does not
    # reveal which accounts exist. Made on first use, not at import (CLI start-up).
    return bcrypt.hashpw(b"podium-no-such-user", bcrypt.gensalt(rounds=rounds))


async def hash_password(password: str, rounds: int = 12) -> str:
    salt = bcrypt.gensalt(rounds=rounds)
    digest = await run_in_threadpool(bcrypt.hashpw, password.encode(), salt)
    return digest.decode()


async def verify_password(password: str, hashed: str | None, rounds: int = 12) -> bool:
    """Check a password; with `hashed=None` spend a cost-`rounds` check and return False."""
    target = hashed.encode() if hashed else await run_in_threadpool(_dummy_hash, rounds)
    try:
        ok = await run_in_threadpool(bcrypt.checkpw, password.encode(), target)
    except ValueError:
        return False
    return ok and hashed is not None
