"""The shapes a client value must have before any cache, dict, lock or store sees it.

Ground layer: imported by the API, the protocol and the domain; imports nothing of
Podium. Each constraint is an annotated msgspec type, so the decoders enforce it and the
OpenAPI document states it from the same definition; the `is_*` helpers check values
that arrive outside a Struct (path and query parameters).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

# PostgreSQL bigint: anything wider is refused before it reaches a query.
INT64_MAX = 2**63 - 1
# Redis scores are doubles: every integer up to 2^53 - 1 in magnitude is exact.
MAX_ABS_SCORE = 2**53 - 1

# `(?!\n)$`: Python's `$` also matches before a final newline, so msgspec (re.search)
# would take "abc\n" for a slug; the lookahead makes it mean "end" as in ECMA-262.
SLUG_PATTERN = r"^[a-z0-9-]{1,40}(?!\n)$"
ACTION_PATTERN = r"^[A-Za-z0-9_.-]{1,64}(?!\n)$"
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,32}(?!\n)$"
HEX_SHA256_PATTERN = r"^[0-9a-fA-F]{64}(?!\n)$"
# Printable text: no NUL (PostgreSQL text refuses it) and no other C0 control character.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

# A board's period (boards/periods.py does their UTC arithmetic).
Period = Literal["all", "day", "week", "month"]
PERIODS: tuple[Period, ...] = ("all", "day", "week", "month")

_SLUG_RE = re.compile(SLUG_PATTERN)
_ACTION_RE = re.compile(ACTION_PATTERN)
_USERNAME_RE = re.compile(USERNAME_PATTERN)
_TEXT_RE = re.compile(TEXT_PATTERN)

Slug = Annotated[
    str,
    msgspec.Meta(
        pattern=SLUG_PATTERN,
        min_length=1,
        max_length=40,
        description="lowercase letters, digits and '-', 1 to 40 characters",
    ),
]
ActionName = Annotated[
    str,
    msgspec.Meta(
        pattern=ACTION_PATTERN,
        min_length=1,
        max_length=64,
        description="letters, digits, '_', '.' and '-', 1 to 64 characters",
    ),
]
Username = Annotated[
    str,
    msgspec.Meta(
        pattern=USERNAME_PATTERN,
        min_length=3,
        max_length=32,
        description="letters, digits, '_', '.' and '-', 3 to 32 characters",
    ),
]
HexSignature = Annotated[
    str,
    msgspec.Meta(
        pattern=HEX_SHA256_PATTERN,
        min_length=64,
        max_length=64,
        description="hex HMAC-SHA256, 64 characters",
    ),
]
UserId = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
Score = Annotated[int, msgspec.Meta(ge=-MAX_ABS_SCORE, le=MAX_ABS_SCORE)]
# A display name or other free text: bound its length with its own Meta beside this one,
# e.g. Annotated[str, msgspec.Meta(pattern=TEXT_PATTERN, min_length=1, max_length=100)].
# A game's name: printable text with at least one visible character (it is shown trimmed).
_PRINTABLE = r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
# Spaces spelled out: Python's `\s` and the ECMA one of the OpenAPI document differ (NEL).
_SPACES = r"\x09-\x0d\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NAME_PATTERN = rf"^{_PRINTABLE}*[^{_SPACES}\x00-\x1f\x7f]{_PRINTABLE}*$"
GameName = Annotated[
    str,
    msgspec.Meta(
        pattern=NAME_PATTERN,
        min_length=1,
        max_length=100,
        description="printable text, 1 to 100 characters, not only spaces",
    ),
]
# A page of a board, over HTTP and WebSocket. The offset bound caps the cost of the
# PostgreSQL fallback, whose OFFSET walks the rows it skips (use the cursor to go deeper).
MAX_PAGE_LIMIT = 200
MAX_OFFSET = 1_000_000
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE_LIMIT)]
PageOffset = Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]
# A report's rows, over HTTP and WebSocket.
MAX_REPORT_LIMIT = 1000
ReportLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_REPORT_LIMIT)]


def exactly_one(fields: dict[str, str]) -> dict[str, object]:
    """JSON Schema for "exactly one of these fields is given" (null counts as absent).

    `fields` maps each field to its JSON type. Structs state it as their class attribute
    `__json_schema_extra__`, which the OpenAPI generator merges into their component, so a
    conforming client knows the rule the handler enforces.
    """

    def given(*names: str) -> dict[str, object]:
        return {"required": list(names), "properties": {n: {"type": fields[n]} for n in names}}

    return {"anyOf": [given(name) for name in fields], "not": given(*fields)}


# A PostgreSQL schema name Podium may quote safely (operator input: PODIUM_DB_SCHEMA).
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def is_schema_name(value: str) -> bool:
    return _SCHEMA_RE.fullmatch(value) is not None


def is_slug(value: str) -> bool:
    return _SLUG_RE.fullmatch(value) is not None


def is_action(value: str) -> bool:
    return _ACTION_RE.fullmatch(value) is not None


def is_username(value: str) -> bool:
    return _USERNAME_RE.fullmatch(value) is not None


def is_text(value: str) -> bool:
    return _TEXT_RE.fullmatch(value) is not None


def user_id_of(raw: str) -> int | None:
    """A path segment as a user id, or None when it is not one (never wider than int64)."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    value = int(raw)
    return value if 1 <= value <= INT64_MAX else None
