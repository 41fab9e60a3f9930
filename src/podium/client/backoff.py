"""Retry pacing: exponential backoff with jitter, and the server's Retry-After."""

from __future__ import annotations

import random

import msgspec


class Backoff(msgspec.Struct, frozen=True):
    """Delay before retry `n` (0-based): half of min(cap, base * 2^n) plus a random
    part up to the other half ("equal jitter"), so clients that failed together do
    not come back together, yet none retries at once."""

    base: float = 0.2
    cap: float = 10.0
    # A Retry-After longer than this is not waited for: the error is raised instead.
    max_retry_after: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def retry_after(self, header: str | None, attempt: int) -> float | None:
        """Seconds to wait as the server asked (delta-seconds form), with a little jitter;
        None when it asked for longer than `max_retry_after`."""
        try:
            asked = float(header) if header is not None else self.delay(attempt)
        except ValueError:
            asked = self.delay(attempt)
        if not 0 <= asked <= self.max_retry_after:
            return None
        return asked + random.uniform(0, min(1.0, self.base))
