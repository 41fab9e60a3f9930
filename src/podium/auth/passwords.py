"""bcrypt hashing, always off the event loop (a cost-12 hash takes ~250 ms)."""

from __future__ import annotations

import bcrypt
from starlette.concurrency import run_in_threadpool

# A real hash of a random password: verifying against it when the user does not
# exist costs the same time as a real check, so timing does not reveal accounts.
_DUMMY_HASH = bcrypt.hashpw(b"podium-no-such-user", bcrypt.gensalt(rounds=12))


async def hash_password(password: str, rounds: int = 12) -> str:
    salt = bcrypt.gensalt(rounds=rounds)
    digest = await run_in_threadpool(bcrypt.hashpw, password.encode(), salt)
    return digest.decode()


async def verify_password(password: str, hashed: str | None) -> bool:
    """Check a password; with `hashed=None` spend the time and return False."""
    target = hashed.encode() if hashed else _DUMMY_HASH
    try:
        ok = await run_in_threadpool(bcrypt.checkpw, password.encode(), target)
    except ValueError:
        return False
    return ok and hashed is not None
