"""An external issuer's signing keys (a JWKS), fetched, cached and refreshed.

Only RS256 (RSA) and ES256 (EC P-256) keys are kept, each with the one algorithm it
declares (or, when it declares none, the one its type implies). The set is fetched with
a timeout and a size bound; it is refreshed in the background once it is older than
`max_age`, and at once for an unknown `kid`, but at most once per `min_interval`: a flood
of random kids makes one fetch, not one each. A failed fetch keeps the keys we have.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt

log = logging.getLogger("podium.auth")

ALGORITHMS = {"RS256": "RSA", "ES256": "EC"}
MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100
FETCH_TIMEOUT = 5.0


class JwksUnavailable(Exception):
    """No key at all can be had (never fetched successfully): sign-in cannot be checked."""


class Key:
    __slots__ = ("algorithm", "key")

    def __init__(self, algorithm: str, key: Any) -> None:
        self.algorithm = algorithm
        self.key = key


def parse_jwks(raw: bytes) -> dict[str | None, Key]:
    """kid -> Key for every usable signature key of a JWKS document; others are skipped."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ValueError("the JWKS is not JSON") from exc
    items = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ValueError("the JWKS has no 'keys' list")
    keys: dict[str | None, Key] = {}
    for item in items[:MAX_KEYS]:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        kty, declared = item.get("kty"), item.get("alg")
        algorithm = declared or {"RSA": "RS256", "EC": "ES256"}.get(str(kty))
        if algorithm not in ALGORITHMS or ALGORITHMS[algorithm] != kty:
            continue
        if kty == "EC" and item.get("crv") != "P-256":
            continue
        try:
            key = jwt.PyJWK(item, algorithm).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        kid = item.get("kid")
        keys[kid if isinstance(kid, str) else None] = Key(algorithm, key)
    return keys


class JwksCache:
    """The keys of one JWKS source: an http(s) URL or a file path."""

    def __init__(
        self,
        source: str,
        *,
        max_age: float = 300.0,
        min_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.max_age = max_age
        self.min_interval = min_interval
        self._clock = clock
        self._keys: dict[str | None, Key] = {}
        self._loaded_at: float | None = None
        self._tried_at = float("-inf")
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self.fetches = 0

    async def key(self, kid: str | None) -> Key | None:
        """The key named `kid` (or the only key, for a token without one), or None."""
        now = self._clock()
        if self._loaded_at is None:
            # Rate-limited too: while the JWKS cannot be had, a stream of tokens makes
            # one attempt per `min_interval`, and 503s meanwhile.
            await self._refresh()
            if self._loaded_at is None:
                raise JwksUnavailable("the identity provider's keys cannot be fetched")
        elif now - self._loaded_at > self.max_age:
            self._refresh_soon()
        found = self._find(kid)
        if found is None and kid is not None:
            # Rotation: the issuer may have published a key since; ask, rate-limited.
            await self._refresh()
            found = self._find(kid)
        return found

    def _find(self, kid: str | None) -> Key | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _refresh_soon(self) -> None:
        if self._background is None or self._background.done():
            self._background = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        tried = self._tried_at
        async with self._lock:
            if self._tried_at != tried:
                return  # someone else fetched while we waited: use theirs
            if self._clock() - self._tried_at < self.min_interval:
                return
            self._tried_at = self._clock()
            try:
                keys = parse_jwks(await self._read())
            except (OSError, httpx.HTTPError, ValueError) as exc:
                log.warning(
                    "JWKS fetch failed; keeping the keys we have", extra={"error": str(exc)}
                )
                return
            self._keys, self._loaded_at = keys, self._clock()

    async def _read(self) -> bytes:
        self.fetches += 1
        if not self.source.startswith(("http://", "https://")):
            path = Path(self.source)
            if path.stat().st_size > MAX_JWKS_BYTES:
                raise ValueError("the JWKS file is too large")
            return await asyncio.to_thread(path.read_bytes)
        async with (
            httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False) as http,
            http.stream("GET", self.source, headers={"accept": "application/json"}) as reply,
        ):
            reply.raise_for_status()
            body = bytearray()
            async for chunk in reply.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("the JWKS is too large")
            return bytes(body)

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
