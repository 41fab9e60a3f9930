"""/api/v1/games: create and change games (admin), read them (any signed-in caller).

Reads are open to every authenticated caller because players pick a game (web page,
clients) and need its action points; the HMAC key never appears in a response.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.responses import JSON, read_json
from podium.api.spec import Param, shape, spec
from podium.auth.guards import require_admin, require_principal
from podium.boards import model
from podium.boards.model import MAX_ABS_SCORE, Game, GameCache, Operator, Order, Policy
from podium.errors import conflict, invalid, not_found, unavailable
from podium.services import Services
from podium.store.db import is_unavailable

ACTION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
UNSET = msgspec.UNSET


class GameIn(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str
    order: Order = "desc"
    operator: Operator = "best"
    policy: Policy = "client"
    min_score: int | None = None
    max_score: int | None = None
    max_delta: int | None = None
    delta_window_s: int = 60
    hmac_key: str | None = None


class GamePatch(msgspec.Struct, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = UNSET
    min_score: int | msgspec.UnsetType | None = UNSET
    max_score: int | msgspec.UnsetType | None = UNSET
    max_delta: int | msgspec.UnsetType | None = UNSET
    delta_window_s: int | msgspec.UnsetType = UNSET
    hmac_key: str | msgspec.UnsetType | None = UNSET


class PointsIn(msgspec.Struct, forbid_unknown_fields=True):
    points: int


def _services(request: Request) -> Services:
    return request.app.state.podium


def _cache(services: Services) -> GameCache:
    return services.extras["games"]  # type: ignore[return-value]


def _check_rules(
    name: str,
    min_score: int | None,
    max_score: int | None,
    max_delta: int | None,
    delta_window_s: int,
    hmac_key: str | None,
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not 1 <= len(name.strip()) <= 100:
        errors["name"] = "1-100 characters"
    for field, value in (("min_score", min_score), ("max_score", max_score)):
        if value is not None and abs(value) > MAX_ABS_SCORE:
            errors[field] = "magnitude at most 2^53 - 1"
    if min_score is not None and max_score is not None and min_score > max_score:
        errors["max_score"] = "must be >= min_score"
    if max_delta is not None and not 0 <= max_delta <= MAX_ABS_SCORE:
        errors["max_delta"] = "0 to 2^53 - 1"
    if not 1 <= delta_window_s <= 86_400 * 31:
        errors["delta_window_s"] = "1 second to 31 days"
    if hmac_key is not None and not 16 <= len(hmac_key) <= 256:
        errors["hmac_key"] = "16-256 characters"
    return errors


async def _store(call):  # type: ignore[no-untyped-def]
    try:
        return await call
    except Exception as exc:
        if is_unavailable(exc):
            raise unavailable("the game store is unavailable") from None
        raise


@spec(
    summary="Create a game (admin)",
    tag="games",
    status=201,
    body=GameIn,
    response=model.GameOut,
    example={"id": "chess", "name": "Chess", "order": "desc", "operator": "best"},
    auth=True,
    errors=(403, 409, 503),
)
async def create_game(request: Request) -> Response:
    await require_admin(request)
    services = _services(request)
    body = await read_json(request, GameIn, services.settings.max_body_bytes)
    errors = _check_rules(
        body.name,
        body.min_score,
        body.max_score,
        body.max_delta,
        body.delta_window_s,
        body.hmac_key,
    )
    if not model.SLUG_RE.match(body.id):
        errors["id"] = "1-40 characters of a-z, 0-9 and '-'"
    elif body.id in model.RESERVED_IDS:
        errors["id"] = f"{body.id!r} is reserved"
    if errors:
        raise invalid("game is invalid", errors)
    game = Game(
        id=body.id,
        name=body.name.strip(),
        order=body.order,
        operator=body.operator,
        policy=body.policy,
        min_score=body.min_score,
        max_score=body.max_score,
        max_delta=body.max_delta,
        delta_window_s=body.delta_window_s,
        hmac_key=body.hmac_key,
        created_at=datetime.now(UTC),
    )
    try:
        created = await _store(model.insert_game(services.pool, game))
    except model.GameExists:
        raise conflict(f"game {body.id!r} exists", code="game_exists") from None
    _cache(services).forget(body.id)
    return JSON(created.public(), status_code=201)


@spec(
    summary="Every game",
    tag="games",
    response=shape("GameList", games=list[model.GameOut]),
    auth=True,
    errors=(503,),
)
async def list_games(request: Request) -> Response:
    await require_principal(request)
    games = await _store(model.list_games(_services(request).pool))
    return JSON({"games": [g.public() for g in games]})


async def _get(services: Services, game_id: str) -> Game:
    game = await _store(model.fetch_game(services.pool, game_id))
    if game is None:
        raise not_found(f"no game {game_id!r}")
    return game


@spec(
    summary="One game",
    tag="games",
    response=model.GameOut,
    path={"game": Param(str, "a game id")},
    auth=True,
    errors=(404, 503),
)
async def get_game(request: Request) -> Response:
    await require_principal(request)
    return JSON((await _get(_services(request), request.path_params["game"])).public())


@spec(
    summary="Change a game's name, bounds, jump limit or HMAC key (admin)",
    tag="games",
    body=GamePatch,
    response=model.GameOut,
    example={"name": "Chess (blitz)"},
    path={"game": Param(str, "a game id")},
    auth=True,
    errors=(403, 404, 503),
)
async def patch_game(request: Request) -> Response:
    await require_admin(request)
    services = _services(request)
    game_id = request.path_params["game"]
    body = await read_json(request, GamePatch, services.settings.max_body_bytes)
    current = await _get(services, game_id)
    changes = {
        f: getattr(body, f) for f in GamePatch.__struct_fields__ if getattr(body, f) is not UNSET
    }
    merged = msgspec.structs.replace(current, **changes)
    errors = _check_rules(
        merged.name,
        merged.min_score,
        merged.max_score,
        merged.max_delta,
        merged.delta_window_s,
        merged.hmac_key,
    )
    if errors:
        raise invalid("game is invalid", errors)
    if not changes:
        return JSON(current.public())
    if "name" in changes:
        changes["name"] = merged.name.strip()
    updated = await _store(model.update_game(services.pool, game_id, changes))
    if updated is None:
        raise not_found(f"no game {game_id!r}")
    _cache(services).forget(game_id)
    return JSON(updated.public())


@spec(
    summary="Set the points of an action (admin)",
    tag="games",
    body=PointsIn,
    response=shape("ActionPoints", game=str, action=str, points=int),
    example={"points": 10},
    path={"game": Param(str, "a game id"), "action": Param(str, "an action name")},
    auth=True,
    errors=(403, 404, 503),
)
async def put_action(request: Request) -> Response:
    await require_admin(request)
    services = _services(request)
    game_id, action = request.path_params["game"], request.path_params["action"]
    if not ACTION_RE.match(action):
        raise invalid("action is invalid", {"action": "1-64 characters of A-Z a-z 0-9 _ . -"})
    body = await read_json(request, PointsIn, services.settings.max_body_bytes)
    if abs(body.points) > MAX_ABS_SCORE:
        raise invalid("points are invalid", {"points": "magnitude at most 2^53 - 1"})
    await _get(services, game_id)
    await _store(
        services.pool.execute(
            "INSERT INTO game_actions (game_id, action, points) VALUES ($1, $2, $3)"
            " ON CONFLICT (game_id, action) DO UPDATE SET points = EXCLUDED.points",
            game_id,
            action,
            body.points,
        )
    )
    return JSON({"game": game_id, "action": action, "points": body.points})


@spec(
    summary="The actions of a game and their points",
    tag="games",
    response=shape("ActionList", game=str, actions=list[shape("Action", action=str, points=int)]),
    path={"game": Param(str, "a game id")},
    auth=True,
    errors=(404, 503),
)
async def list_actions(request: Request) -> Response:
    await require_principal(request)
    services = _services(request)
    game_id = request.path_params["game"]
    await _get(services, game_id)
    rows = await _store(
        services.pool.fetch(
            "SELECT action, points FROM game_actions WHERE game_id = $1 ORDER BY action",
            game_id,
        )
    )
    return JSON(
        {"game": game_id, "actions": [{"action": r["action"], "points": r["points"]} for r in rows]}
    )


routes = [
    Route("/games", create_game, methods=["POST"]),
    Route("/games", list_games, methods=["GET"]),
    Route("/games/{game}", get_game, methods=["GET"]),
    Route("/games/{game}", patch_game, methods=["PATCH"]),
    Route("/games/{game}/actions", list_actions, methods=["GET"]),
    Route("/games/{game}/actions/{action}", put_action, methods=["PUT"]),
]
