"""Players known by an outside identity (an external issuer's `sub`, a device id).

A player is created on first sight, under an advisory lock on the identity: two first
requests at once, on one instance or several, make one user.
"""

from __future__ import annotations

import re
import secrets
from typing import Literal

import asyncpg
import msgspec

from podium.store.users import USER_COLS, User, UserExists, user_of

Kind = Literal["external", "device"]  # the table's CHECK

_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
NAME_MAX = 32
# Numbered suffixes tried before random ones: "ada", "ada-2" ... "ada-9", "ada-3f9c1a".
_NUMBERED = 9


class Known(msgspec.Struct, frozen=True):
    user_id: int
    voided: bool


def display_name(raw: object, fallback: str) -> str:
    """A username from a claim: its letters, digits, '_', '.', '-' (3 to 32), else `fallback`."""
    if isinstance(raw, str):
        name = _NOT_NAME.sub("", raw[:256]).strip(".-")[:NAME_MAX]
        if len(name) >= 3:
            return name
    return fallback


def _candidates(base: str) -> list[str]:
    names = [base]
    for n in range(2, _NUMBERED + 1):
        names.append(f"{base[: NAME_MAX - 2]}-{n}")
    for _ in range(5):
        names.append(f"{base[: NAME_MAX - 7]}-{secrets.token_hex(3)}")
    return names


async def _find(
    db: asyncpg.Pool | asyncpg.Connection, kind: Kind, issuer: str, subject: str
) -> Known | None:
    row = await db.fetchrow(
        "SELECT i.user_id, u.voided_at IS NOT NULL AS voided FROM identities i"
        " JOIN users u ON u.id = i.user_id"
        " WHERE i.kind = $1 AND i.issuer = $2 AND i.subject = $3",
        kind,
        issuer,
        subject,
    )
    return Known(row["user_id"], row["voided"]) if row else None


async def user_for(pool: asyncpg.Pool, kind: Kind, issuer: str, subject: str, name: str) -> Known:
    """The player of an identity, created (named `name`, suffixed if taken) on first sight."""
    if (known := await _find(pool, kind, issuer, subject)) is not None:
        return known
    async with pool.acquire() as conn, conn.transaction():
        # The second of two concurrent first sights waits here, then finds the first's row
        # (each READ COMMITTED statement sees what committed before it started).
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended("
            "'podium:identity:' || $1 || '|' || $2 || '|' || $3, 0))",
            kind,
            issuer,
            subject,
        )
        if (known := await _find(conn, kind, issuer, subject)) is not None:
            return known
        user_id = await _create_named(conn, name)
        await conn.execute(
            "INSERT INTO identities (kind, issuer, subject, user_id) VALUES ($1, $2, $3, $4)",
            kind,
            issuer,
            subject,
            user_id,
        )
    return Known(user_id, False)


async def _create_named(conn: asyncpg.Connection, base: str) -> int:
    for candidate in _candidates(base):
        # Any unique index may refuse the name (lower(username)); then the next one.
        user_id = await conn.fetchval(
            "INSERT INTO users (username) VALUES ($1) ON CONFLICT DO NOTHING RETURNING id",
            candidate,
        )
        if user_id is not None:
            return int(user_id)
    raise UserExists("username")


async def link_device_player(
    db: asyncpg.Pool | asyncpg.Connection,
    user_id: int,
    username: str,
    email: str | None,
    password_hash: str,
) -> User | None:
    """Give a device player (not linked yet) a username, password and maybe an email.

    None when the player is not a device player or already has a password. Raises
    UserExists when the username or email belongs to another account.
    """
    try:
        row = await db.fetchrow(
            "UPDATE users SET username = $2, email = $3, password_hash = $4"
            " WHERE id = $1 AND password_hash IS NULL AND voided_at IS NULL"
            " AND EXISTS (SELECT 1 FROM identities WHERE user_id = $1 AND kind = 'device')"
            f" RETURNING {USER_COLS}",
            user_id,
            username,
            email,
            password_hash,
        )
    except asyncpg.UniqueViolationError as exc:
        field = "email" if "email" in (exc.constraint_name or "") else "username"
        raise UserExists(field) from None
    return user_of(row) if row else None
