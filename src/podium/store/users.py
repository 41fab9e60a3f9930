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


_USER_COLS = "id, username, email, role, created_at"


def _user(row: asyncpg.Record) -> User:
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
            f" RETURNING {_USER_COLS}",
            username,
            email,
            password_hash,
            role,
        )
    except asyncpg.UniqueViolationError as exc:
        field = "email" if "email" in (exc.constraint_name or "") else "username"
        raise UserExists(field) from None
    assert row is not None
    return _user(row)


async def get_user(db: asyncpg.Pool | asyncpg.Connection, user_id: int) -> User | None:
    row = await db.fetchrow(
        f"SELECT {_USER_COLS} FROM users WHERE id = $1 AND voided_at IS NULL", user_id
    )
    return _user(row) if row else None


async def find_login(
    db: asyncpg.Pool | asyncpg.Connection, login: str, by_email: bool
) -> tuple[User, str] | None:
    column = "lower(email)" if by_email else "lower(username)"
    row = await db.fetchrow(
        f"SELECT {_USER_COLS}, password_hash FROM users WHERE {column} = lower($1)", login
    )
    return (_user(row), row["password_hash"]) if row else None


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


async def spend_refresh(conn: asyncpg.Connection, jti: uuid.UUID) -> str:
    """Mark a refresh token used. Returns 'ok', 'reused', 'revoked' or 'unknown'."""
    row = await conn.fetchrow(
        "UPDATE refresh_tokens SET used_at = now()"
        " WHERE jti = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()"
        " RETURNING family",
        jti,
    )
    if row is not None:
        return "ok"
    state = await conn.fetchrow(
        "SELECT used_at, revoked_at FROM refresh_tokens WHERE jti = $1", jti
    )
    if state is None:
        return "unknown"
    if state["used_at"] is not None:
        return "reused"
    return "revoked"


async def revoke_family(db: asyncpg.Pool | asyncpg.Connection, family: uuid.UUID) -> None:
    await db.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL",
        family,
    )
