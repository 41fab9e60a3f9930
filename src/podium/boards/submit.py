"""The score write path shared by HTTP and WebSocket: validate, then group-commit.

Policies: `client` games take `score` from players (an `action` there is 403 `policy`);
`actions` games take `action` and look its points up (a player's `score` there is
refused with 403 `policy`: the body is well-formed, the game just does not let players
set scores); `authoritative`
games refuse players (403) and take service credentials scoped to the game, which
write for any existing `user_id` with `score` or `action`.

Signed games (with an HMAC key) need `ts` (unix seconds, within 60 s of the server
clock) and `signature` = hex HMAC-SHA256 over `"{user_id}|{game}|{what}|{event_id}|{ts}"`
where `what` is the action name, or the decimal score for a score write, and
`event_id` is the UUID in canonical (lowercase, hyphenated) form.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import msgspec
import redis.exceptions

from podium import metrics
from podium.auth.tokens import Principal
from podium.boards.model import Game
from podium.boards.runtime import Boards
from podium.boards.writer import Outcome, Write
from podium.errors import (
    ApiError,
    conflict,
    forbidden,
    invalid,
    not_found,
    rate_limited,
)
from podium.protocol import ScoreIn
from podium.services import Services
from podium.store.db import store_errors

log = logging.getLogger("podium.scores")

SIGNATURE_MAX_AGE_S = 60


class ScoreOut(msgspec.Struct):
    game: str
    user_id: int
    score: int
    delta: int
    rank: int | None
    previous_rank: int | None
    duplicate: bool


def signature_message(user_id: int, game: str, what: str, event_id: str, ts: int) -> bytes:
    return f"{user_id}|{game}|{what}|{event_id}|{ts}".encode()


def sign(key: str, user_id: int, game: str, what: str, event_id: str, ts: int) -> str:
    """What a game server sends as `signature` (also used by tests and the bench)."""
    msg = signature_message(user_id, game, what, event_id, ts)
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


async def _game(boards: Boards, game_id: str) -> Game:
    with store_errors("the score store is unavailable; nothing was written"):
        game = await boards.games.get(game_id)
    if game is None:
        raise not_found(f"no game {game_id!r}")
    return game


def _who_and_what(principal: Principal, game: Game, body: ScoreIn) -> tuple[int, str]:
    """The user written for and the kind of write ("score" or "action"), or an error."""
    if body.score is not None and body.action is not None:
        raise invalid("give either score or action, not both", {"score": "or action"})
    if principal.kind == "service":
        if game.id not in principal.games:
            raise forbidden(f"this credential may not write to {game.id!r}")
        if body.user_id is None:
            raise invalid("service writes must name user_id", {"user_id": "required"})
        if body.score is None and body.action is None:
            raise invalid("give score or action", {"score": "required"})
        return body.user_id, "action" if body.action is not None else "score"
    assert principal.user_id is not None
    if body.user_id is not None and body.user_id != principal.user_id:
        raise forbidden("players may only write their own scores")
    if game.policy == "authoritative":
        raise forbidden("only the game's servers write scores to this game", code="policy")
    if game.policy == "actions":
        if body.score is not None:
            raise forbidden("this game takes actions, not scores", code="policy")
        if body.action is None:
            raise invalid("this game takes an action", {"action": "required"})
        return principal.user_id, "action"
    if body.action is not None:
        raise forbidden("this game takes scores, not actions", code="policy")
    if body.score is None:
        raise invalid("this game takes a score", {"score": "required"})
    return principal.user_id, "score"


def _check_signature(
    services: Services, game: Game, body: ScoreIn, user_id: int, event_id: str
) -> None:
    if game.hmac_key is None:
        return
    if body.signature is None or body.ts is None:
        raise forbidden("this game needs signed writes (ts and signature)", code="signature")
    age = abs(services.clock.now().timestamp() - body.ts)
    if age > SIGNATURE_MAX_AGE_S:
        raise forbidden("the signature is too old or from the future", code="signature")
    what = body.action if body.action is not None else str(body.score)
    expected = sign(game.hmac_key, user_id, game.id, what, event_id, body.ts)
    if not hmac.compare_digest(expected, body.signature.lower()):
        raise forbidden("bad signature", code="signature")


async def enforce_limits(services: Services, counters: list[tuple[str, int, int]]) -> None:
    """Count one hit on each (key, limit, window); 429 with Retry-After when over any.

    Counted in process (auth/ratelimit.RateCounters: no I/O per hit, reconciled with
    Redis per tick). A counter past the local table's bound is counted in Redis on
    the hit, and fails open when Redis cannot count: Redis down must not stop durable
    writes (SPEC §10), and the other bounds of a request still hold.
    """
    try:
        wait = await services.rates.hit_many(counters)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("rate limit skipped: redis unavailable: %r", exc)
        return
    if wait:
        raise rate_limited(wait)


async def _rate_limit(services: Services, user_id: int, client_addr: str | None) -> None:
    """Per user, and per IP for players (a game server writes for many users)."""
    settings, keys = services.settings, services.keys
    counters = [(keys.rate("write", str(user_id)), settings.writes_per_second_per_user, 1)]
    if client_addr is not None:
        counters.append((keys.rate("write-ip", client_addr), settings.writes_per_second_per_ip, 1))
    await enforce_limits(services, counters)


def payload_hash(game: str, user_id: int, kind: str, score: int | None, action: str | None) -> str:
    text = f"{game}|{user_id}|{kind}|{'' if score is None else score}|{action or ''}"
    return hashlib.sha256(text.encode()).hexdigest()


def _result(outcome: Outcome) -> ScoreOut:
    match outcome.status:
        case "ok" | "duplicate":
            r = outcome.response or {}
            duplicate = outcome.status == "duplicate"
            return ScoreOut(
                game=r["game"],
                user_id=r["user_id"],
                score=r["score"],
                delta=r["delta"],
                rank=r.get("rank") if duplicate else outcome.rank,
                previous_rank=r.get("previous_rank") if duplicate else outcome.previous_rank,
                duplicate=duplicate,
            )
        case "conflict":
            raise conflict("event_id was used with a different payload", code="event_conflict")
        case "no_game":
            raise not_found("no such game")
        case "no_user":
            raise not_found("no such user")
        case "no_action":
            raise not_found("no such action in this game")
        case "voided":
            raise forbidden("this user's scores are void", code="voided")
        case "out_of_bounds":
            raise invalid("score out of the game's bounds", {"score": "out of bounds"})
        case "overflow":
            raise invalid(
                "the resulting value would exceed 2^53 - 1 in magnitude", {"score": "too large"}
            )
        case "suspicious":
            raise forbidden("score jump over the game's limit; flagged", code="suspicious")
    raise ApiError(500, "internal", "unexpected write status")


async def submit_score(
    services: Services, boards: Boards, principal: Principal, body: ScoreIn, client_addr: str
) -> ScoreOut:
    """Validate and commit one score write; raises ApiError (4xx, 503)."""
    try:
        out = await _submit(services, boards, principal, body, client_addr)
    except ApiError:
        metrics.WRITES.labels("refused").inc()
        raise
    metrics.WRITES.labels("duplicate" if out.duplicate else "accepted").inc()
    return out


async def _submit(
    services: Services, boards: Boards, principal: Principal, body: ScoreIn, client_addr: str
) -> ScoreOut:
    event_id = body.event_id
    # Counted before the game lookup: refused writes (unknown games, bad policy) cost
    # a caller its allowance too, so they cannot be used to hammer the store.
    player = principal.kind == "user"
    counted = principal.user_id if player else body.user_id
    if counted is not None:
        await _rate_limit(services, counted, client_addr if player else None)
    game = await _game(boards, body.game)
    user_id, kind = _who_and_what(principal, game, body)
    _check_signature(services, game, body, user_id, str(event_id))
    write = Write(
        event_id=event_id,
        user_id=user_id,
        game=game.id,
        descending=game.descending,
        kind=kind,
        input=body.score,
        action=body.action,
        payload_hash=payload_hash(game.id, user_id, kind, body.score, body.action),
        created_at=services.clock.now(),
        client_addr=client_addr,
        credential=principal.credential,
    )
    return _result(await boards.writer.submit(write))
