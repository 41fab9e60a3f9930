"""Users, refresh-token families and service credentials in PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec


class User(msgspec.Struct, kw_only=True):
    id: int
    username: str
    email: str
    role: str
    created_at: datetime


# A player signed in by device or an external issuer has no email: '' on the wire.
USER_COLS = "id, username, coalesce(email, '') AS email, role, created_at"


def user_of(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        email=row["email"],
        role=row["role"],
        created_at=row["created_at"],
    )


class UserExists(Exception):
    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


async def create_user(
    db: asyncpg.Pool | asyncpg.Connection,
    username: str,
    email: str,
    password_hash: str,
    role: str = "player",
) -> User:
    try:
        row = await db.fetchrow(
            "INSERT INTO users (username, email, password_hash, role) VALUES ($1, $2, $3, $4)"
            f" RETURNING {USER_COLS}",
            username,
            email,
            password_hash,
            role,
        )
    except asyncpg.UniqueViolationError as exc:
        field = "email" if "email" in (exc.constraint_name or "") else "username"
        raise UserExists(field) from None
    assert row is not None
    return user_of(row)


async def get_user(db: asyncpg.Pool | asyncpg.Connection, user_id: int) -> User | None:
    row = await db.fetchrow(
        f"SELECT {USER_COLS} FROM users WHERE id = $1 AND voided_at IS NULL", user_id
    )
    return user_of(row) if row else None


async def find_login(
    db: asyncpg.Pool | asyncpg.Connection, login: str, by_email: bool
) -> tuple[User, str] | None:
    column = "lower(email)" if by_email else "lower(username)"
    # A voided account cannot log in; to the caller it is just a failed login.
    row = await db.fetchrow(
        f"SELECT {USER_COLS}, password_hash FROM users"
        f" WHERE {column} = lower($1) AND voided_at IS NULL",
        login,
    )
    return (user_of(row), row["password_hash"]) if row else None


async def store_refresh(
    db: asyncpg.Pool | asyncpg.Connection,
    jti: uuid.UUID,
    family: uuid.UUID,
    user_id: int,
    expires_at: datetime,
) -> None:
    await db.execute(
        "INSERT INTO refresh_tokens (jti, family, user_id, expires_at) VALUES ($1, $2, $3, $4)",
        jti,
        family,
        user_id,
        expires_at,
    )


async def _lock_family(conn: asyncpg.Connection, family: uuid.UUID) -> None:
    # Rotation and revocation of one family take turns: a revocation's UPDATE cannot
    # miss a token that a concurrent rotation inserts (READ COMMITTED would let it).
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('podium:family:' || $1::uuid::text, 0))",
        family,
    )


async def rotate_refresh(
    conn: asyncpg.Connection,
    jti: uuid.UUID,
    family: uuid.UUID,
    user_id: int,
    new_jti: uuid.UUID,
    expires_at: datetime,
) -> str:
    """Spend refresh token `jti` and store its successor, atomically.

    Returns 'ok', 'reused' (the family is then revoked, successor included), 'revoked'
    or 'unknown'. Runs in one transaction under the family's lock, and holds the
    user's row (FOR SHARE) so a concurrent void waits for it, then revokes its result.
    """
    async with conn.transaction():
        await _lock_family(conn, family)
        live = await conn.fetchval(
            "SELECT true FROM users WHERE id = $1 AND voided_at IS NULL FOR SHARE", user_id
        )
        if not live:
            return "revoked"
        row = await conn.fetchrow(
            "UPDATE refresh_tokens SET used_at = now()"
            " WHERE jti = $1 AND family = $2 AND user_id = $3"
            " AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()"
            " RETURNING jti",
            jti,
            family,
            user_id,
        )
        if row is not None:
            await store_refresh(conn, new_jti, family, user_id, expires_at)
            return "ok"
        state = await conn.fetchrow(
            "SELECT used_at, revoked_at FROM refresh_tokens WHERE jti = $1", jti
        )
        if state is None:
            return "unknown"
        if state["used_at"] is not None:
            # A spent token used again means it leaked: end the whole family.
            await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = now()"
                " WHERE family = $1 AND revoked_at IS NULL",
                family,
            )
            return "reused"
        return "revoked"


async def revoke_family(pool: asyncpg.Pool, family: uuid.UUID) -> None:
    """Revoke every refresh token of a family, under the lock rotation takes."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_family(conn, family)
        await conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL",
            family,
        )


async def revoke_user(db: asyncpg.Pool | asyncpg.Connection, user_id: int) -> None:
    """Revoke every refresh token of a user (after the user was voided).

    A rotation in flight holds the user's row, which the void's UPDATE waited for: by
    now its new token is committed and this statement sees it.
    """
    await db.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
    )
