"""The denials in process: what `deny:*` holds in Redis, checked without a round trip.

Redis holds the denial keys (`deny:jti:`, `deny:fam:`, `deny:user:`) with their TTL;
every instance hears each new one on the revocations channel. This copy answers a
token check only while it is known complete:

- the instance that revokes adds the denial here before it answers;
- the realtime hub adds what it hears on the channel and, after every (re)connection
  of its pub/sub link, reloads every deny key from Redis (`resync`);
- while the link is down, between a reconnection and the end of the reload, or once
  the table is full, `check` says "unknown" and the guard asks Redis, as before.

So a denial is never forgotten: it is either here or the guard reads Redis. Entries
expire with the TTL their key had in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis

from podium.keys import Keys

# A user's denial is announced as `user:<id>`, a single token's as `jti:<id>` (logout),
# a family's as its bare id; `service:<name>` is refused by PostgreSQL, not here.
USER_SUBJECT = "user:"
JTI_SUBJECT = "jti:"
SERVICE_SUBJECT = "service:"

Verdict = tuple[bool, bool]  # (token revoked, user voided)


class Denylist:
    """Bounded, self-expiring copy of the deny keys; trusted only while complete."""

    def __init__(self, keys: Keys, size: int, clock: Callable[[], float] = time.monotonic):
        self._keys = keys
        self._size = max(1, size)
        self._clock = clock
        # Subject -> monotonic expiry. Subjects as on the channel (see above).
        self._until: dict[str, float] = {}
        self._live = False  # the channel is up and the last reload finished
        self._full = False  # a denial did not fit: only Redis has it
        self._epoch = 0  # bumped on every loss: a reload that spans one is void
        self.losses = 0
        self.reloads = 0

    @property
    def trusted(self) -> bool:
        """Whether a miss here means "not denied" (else the guard asks Redis)."""
        return self._live and not self._full

    def __len__(self) -> int:
        return len(self._until)

    def add(self, subject: str, ttl: float) -> None:
        """One denial, for `ttl` seconds (as long as its Redis key lives)."""
        if not subject or subject.startswith(SERVICE_SUBJECT) or ttl <= 0:
            return
        now = self._clock()
        if subject not in self._until and len(self._until) >= self._size:
            self._sweep(now)
            if len(self._until) >= self._size:
                # Past the bound: keep nothing new, and stop trusting a miss until a
                # reload fits; the denial itself is in Redis, which the guard reads.
                self._full = True
                return
        self._until[subject] = max(self._until.get(subject, 0.0), now + ttl)

    def lost(self) -> None:
        """The channel dropped: denials may go unheard until the next reload."""
        self._live = False
        self._epoch += 1
        self.losses += 1

    def check(self, jti: str, family: str, user_id: int) -> Verdict | None:
        """(revoked, voided) from here, or None when only Redis can answer."""
        if not self.trusted or not family:
            return None
        now = self._clock()
        return (
            self._denied(JTI_SUBJECT + jti, now) or self._denied(family, now),
            self._denied(f"{USER_SUBJECT}{user_id}", now),
        )

    def _denied(self, subject: str, now: float) -> bool:
        until = self._until.get(subject)
        if until is None:
            return False
        if until > now:
            return True
        del self._until[subject]
        return False

    def _sweep(self, now: float) -> None:
        for subject in [s for s, until in self._until.items() if until <= now]:
            del self._until[subject]

    async def resync(self, redis: aioredis.Redis, batch: int = 1000) -> bool:
        """Reload every deny key from Redis (call it once the channel is subscribed).

        Denials heard meanwhile stay: the union of the scan and the channel is complete.
        True when the copy is trusted again; a RedisError propagates (still untrusted).
        """
        epoch = self._epoch
        self._live = False
        self._full = False
        prefixes = {
            self._keys.deny_jti(""): JTI_SUBJECT,
            self._keys.deny_family(""): "",
            self._keys.deny_user(""): USER_SUBJECT,
        }
        pattern = self._keys.deny_jti("*").removesuffix("jti:*") + "*"
        found: list[bytes] = []
        async for key in redis.scan_iter(match=pattern, count=batch):
            found.append(key)
        for start in range(0, len(found), batch):
            chunk = found[start : start + batch]
            async with redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.pttl(key)
                ttls = await pipe.execute()
            for key, ttl_ms in zip(chunk, ttls, strict=True):
                name = key.decode(errors="replace")
                for prefix, subject in prefixes.items():
                    if name.startswith(prefix):
                        # No TTL (-1) should not happen; keep it one access lifetime.
                        seconds = ttl_ms / 1000 if ttl_ms > 0 else 3600.0 if ttl_ms == -1 else 0
                        self.add(subject + name[len(prefix) :], seconds)
                        break
        self.reloads += 1
        if epoch != self._epoch:
            return False  # lost again while reloading: the next reconnection reloads
        self._live = True
        return self.trusted
