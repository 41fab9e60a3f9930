"""Bring your own identity: bearer JWTs of an external issuer, verified with its JWKS.

Only RS256 and ES256, and only the algorithm the key itself declares: a token naming
`none`, HS256 (say, with the public key as the secret) or another key's algorithm is
refused before its signature is read. `iss`, `aud`, `exp`, `nbf` and `iat` are checked
with a small leeway. Its `sub` maps to a Podium player, created on first sight
(store/identities.py).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

import asyncpg
import jwt

from podium.auth.jwks import ALGORITHMS, JwksCache
from podium.auth.tokens import Principal, TokenError
from podium.store import identities

LEEWAY = 30
MAX_TOKEN_CHARS = 8192
MAX_SUBJECT_CHARS = 255
CACHE_SIZE = 10_000


class ExternalIdentity:
    """Verifies one issuer's tokens and turns them into Principals of Podium players."""

    def __init__(
        self,
        jwks: JwksCache,
        issuer: str,
        audience: str,
        name_claims: tuple[str, ...],
        cache_ttl: int,
    ) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.name_claims = name_claims
        # A verified token is remembered for at most `cache_ttl` (the access-token
        # lifetime): then it is verified again, and its player's void read again, so a
        # void outlives no cached token even after its deny keys expire.
        self.cache_ttl = cache_ttl
        # Keyed by the token's SHA-256: an external token may be 8 KiB, the table holds
        # CACHE_SIZE of them.
        self._verified: dict[bytes, tuple[Principal, float]] = {}

    def cached(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(key)
        if known is None:
            return None
        principal, until = known
        if until > time.time():
            return principal
        del self._verified[key]
        return None

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a genuine token of our issuer; TokenError otherwise.

        Raises JwksUnavailable when no key could ever be fetched.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError("invalid token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS or not (kid is None or isinstance(kid, str)):
            raise TokenError("invalid token")
        if kid is not None and not 1 <= len(kid) <= 256:
            raise TokenError("invalid token")
        key = await self.jwks.key(kid)
        if key is None or key.algorithm != algorithm:
            raise TokenError("invalid token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["sub", "exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired", expired=True) from None
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        subject, issued = claims["sub"], claims["iat"]
        if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_CHARS:
            raise TokenError("invalid token")
        if not isinstance(issued, (int, float)) or issued > time.time() + LEEWAY:
            raise TokenError("invalid token")
        return claims

    async def principal(self, pool: asyncpg.Pool, token: str) -> Principal:
        """The Principal of a genuine token: its player found, or created on first sight."""
        if (known := self.cached(token)) is not None:
            return known
        claims = await self.verify(token)
        subject = str(claims["sub"])
        fallback = "player-" + hashlib.sha256(f"{self.issuer}|{subject}".encode()).hexdigest()[:8]
        name = identities.display_name(
            next((claims[c] for c in self.name_claims if claims.get(c)), None), fallback
        )
        found = await identities.user_for(pool, "external", self.issuer, subject, name)
        if found.voided:
            raise TokenError("this account is voided", voided=True)
        digest = hashlib.sha256(token.encode()).digest()
        principal = Principal(
            kind="user",
            user_id=found.user_id,
            role="player",
            # A token of its own for logout and the denylist: a family no refresh token
            # has, so a revocation check finds nothing but what was denied here.
            jti="x" + digest[:16].hex(),
            family=uuid.UUID(bytes=digest[16:32]).hex,
            exp=int(claims["exp"]),
            credential=f"user:{found.user_id}",
        )
        if len(self._verified) >= CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = (principal, min(principal.exp, time.time() + self.cache_ttl))
        return principal
