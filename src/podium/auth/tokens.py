"""JWT access and refresh tokens (HS256, algorithm pinned) and service credentials."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from typing import Any, Literal

import jwt
import msgspec

ALGORITHM = "HS256"
SERVICE_PREFIX = "psk_"
# How every Podium JWT begins (its header, as PyJWT writes it): with an external issuer
# configured, a token that does not start so is that issuer's to judge.
PODIUM_JWT_PREFIX = jwt.encode({}, "-" * 32, algorithm=ALGORITHM).partition(".")[0] + "."
# Access tokens verified once and remembered (per process) until they expire.
VERIFIED_CACHE_SIZE = 10_000


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: a user (player or admin) or a service credential."""

    kind: Literal["user", "service"]
    user_id: int | None = None
    role: str = "player"
    games: tuple[str, ...] = ()
    jti: str = ""
    family: str = ""
    exp: int = 0
    credential: str = ""

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and self.role == "admin"


class TokenError(Exception):
    """A token is missing, malformed, expired, tampered or not for us."""

    def __init__(self, message: str, *, expired: bool = False, voided: bool = False) -> None:
        super().__init__(message)
        self.expired = expired
        # Genuine, but its account was voided: 403 `voided` rather than 401.
        self.voided = voided


class TokenIssuer:
    """Signs and verifies Podium's JWTs with one key and fixed claims."""

    def __init__(self, secret: str, issuer: str, audience: str, access_ttl: int, refresh_ttl: int):
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        # Token text -> its Principal. Only tokens that verified get in, keyed by the
        # whole signed text: a hit is the same bytes under the same key. Insertion
        # order evicts the oldest past the bound.
        self._verified: dict[str, Principal] = {}

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def access(self, user_id: int, role: str, family: str, now: int | None = None) -> str:
        now = int(time.time()) if now is None else now
        return self._sign(
            {
                "sub": str(user_id),
                "role": role,
                "jti": uuid.uuid4().hex,
                "fam": family,
                "typ": "access",
                "iat": now,
                "exp": now + self.access_ttl,
                "iss": self.issuer,
                "aud": self.audience,
            }
        )

    def refresh(self, user_id: int, family: str, jti: str, now: int | None = None) -> str:
        now = int(time.time()) if now is None else now
        return self._sign(
            {
                "sub": str(user_id),
                "jti": jti,
                "fam": family,
                "typ": "refresh",
                "iat": now,
                "exp": now + self.refresh_ttl,
                "iss": self.issuer,
                "aud": self.audience,
            }
        )

    def decode(self, token: str, typ: str = "access") -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                # Pinned: a token that names another algorithm ("none", RS256 with
                # our key as a public key) is rejected before its signature is read.
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["sub", "jti", "exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired", expired=True) from None
        except jwt.PyJWTError:
            raise TokenError("invalid token") from None
        if claims.get("typ") != typ:
            raise TokenError("invalid token")
        try:
            int(claims["sub"])
        except (TypeError, ValueError):
            raise TokenError("invalid token") from None
        return claims

    def access_principal(self, token: str) -> Principal:
        """The Principal of a valid access token: verified once, then remembered.

        A repeat costs a dict lookup and the expiry check instead of an HMAC, a JSON
        parse and six claim checks. Revocation is not this function's: see guards.
        """
        known = self._verified.get(token)
        if known is not None:
            # PyJWT's rule: expired once `exp <= now`.
            if known.exp > time.time():
                return known
            del self._verified[token]
            raise TokenError("token expired", expired=True)
        principal = self.principal(self.decode(token))
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = principal
        return principal

    def principal(self, claims: dict[str, Any]) -> Principal:
        return Principal(
            kind="user",
            user_id=int(claims["sub"]),
            role=str(claims.get("role", "player")),
            jti=str(claims["jti"]),
            family=str(claims.get("fam", "")),
            exp=int(claims["exp"]),
            credential=f"user:{claims['sub']}",
        )


def new_service_secret(name: str) -> str:
    return f"{SERVICE_PREFIX}{secrets.token_urlsafe(32)}"


def hash_service_secret(secret: str) -> bytes:
    # The secret has 256 bits of entropy: a fast hash is enough, bcrypt would only
    # slow every authoritative write.
    return hashlib.sha256(secret.encode()).digest()
