"""/api/v1/games: create and change games (admin), read them (any signed-in caller).

Reads are open to every authenticated caller because players pick a game (web page,
clients) and need its action points; the HMAC key never appears in a response.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.podium import podium_of
from podium.api.responses import JSON, read_json, read_path
from podium.api.spec import Param, shape, spec
from podium.auth.guards import require_admin, require_principal
from podium.boards import model
from podium.boards.model import MAX_ABS_SCORE, Game, GameCache, Operator, Order, Policy
from podium.errors import conflict, invalid, not_found, unavailable
from podium.services import Services
from podium.store.db import is_unavailable
from podium.validation import TEXT_PATTERN, ActionName, GameName, Score, Slug

UNSET = msgspec.UNSET
MAX_WINDOW_S = 86_400 * 31

GameId = Annotated[
    Slug,
    msgspec.Meta(
        description="a slug; `global` is reserved",
        extra_json_schema={"not": {"enum": sorted(model.RESERVED_IDS)}},
    ),
]
Bound = Score | None
MaxDelta = Annotated[int, msgspec.Meta(ge=0, le=MAX_ABS_SCORE)] | None
Window = Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_S, description="1 second to 31 days")]
HmacKey = Annotated[
    str, msgspec.Meta(pattern=TEXT_PATTERN, min_length=16, max_length=256, description="16-256")
]
GAME = {"game": Param(Slug, "a game id")}
ACTION = {"action": Param(ActionName, "an action name")}
MIN_MAX = "`min_score` must not exceed `max_score`."


class GameIn(msgspec.Struct, forbid_unknown_fields=True):
    id: GameId
    name: GameName
    order: Order = "desc"
    operator: Operator = "best"
    policy: Policy = "client"
    min_score: Bound = None
    max_score: Bound = None
    max_delta: MaxDelta = None
    delta_window_s: Window = 60
    hmac_key: HmacKey | None = None


class GamePatch(msgspec.Struct, forbid_unknown_fields=True):
    name: GameName | msgspec.UnsetType = UNSET
    min_score: Bound | msgspec.UnsetType = UNSET
    max_score: Bound | msgspec.UnsetType = UNSET
    max_delta: MaxDelta | msgspec.UnsetType = UNSET
    delta_window_s: Window | msgspec.UnsetType = UNSET
    hmac_key: HmacKey | msgspec.UnsetType | None = UNSET


class PointsIn(msgspec.Struct, forbid_unknown_fields=True):
    points: Score


def _services(request: Request) -> Services:
    return podium_of(request).services


def _cache(request: Request) -> GameCache:
    return podium_of(request).boards.games


def _check_rules(min_score: int | None, max_score: int | None) -> None:
    """The one rule across fields (each field's own shape is the decoder's)."""
    if min_score is not None and max_score is not None and min_score > max_score:
        raise invalid("game is invalid", {"max_score": "must be >= min_score"})


class Action(msgspec.Struct):
    action: str
    points: int


class ActionList(msgspec.Struct):
    game: str
    actions: list[Action]


T = TypeVar("T")


async def _store(call: Awaitable[T]) -> T:
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
    description=MIN_MAX,
)
async def create_game(request: Request) -> Response:
    await require_admin(request)
    services = _services(request)
    body = await read_json(request, GameIn, services.settings.max_body_bytes)
    if body.id in model.RESERVED_IDS:
        raise invalid("game is invalid", {"id": f"{body.id!r} is reserved"})
    _check_rules(body.min_score, body.max_score)
    fields = msgspec.structs.asdict(body)
    game = Game(**fields | {"name": body.name.strip(), "created_at": datetime.now(UTC)})
    try:
        created = await _store(model.insert_game(services.pool, game))
    except model.GameExists:
        raise conflict(f"game {body.id!r} exists", code="game_exists") from None
    _cache(request).forget(body.id)
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
    path=GAME,
    auth=True,
    errors=(404, 503),
)
async def get_game(request: Request) -> Response:
    await require_principal(request)
    game_id = read_path(request, GAME)["game"]
    return JSON((await _get(_services(request), game_id)).public())


@spec(
    summary="Change a game's name, bounds, jump limit or HMAC key (admin)",
    tag="games",
    body=GamePatch,
    response=model.GameOut,
    example={"name": "Chess (blitz)"},
    path=GAME,
    auth=True,
    errors=(403, 404, 503),
    description=MIN_MAX,
)
async def patch_game(request: Request) -> Response:
    await require_admin(request)
    services = _services(request)
    game_id = read_path(request, GAME)["game"]
    body = await read_json(request, GamePatch, services.settings.max_body_bytes)
    current = await _get(services, game_id)
    changes = {
        f: getattr(body, f) for f in GamePatch.__struct_fields__ if getattr(body, f) is not UNSET
    }
    merged = msgspec.structs.replace(current, **changes)
    _check_rules(merged.min_score, merged.max_score)
    if not changes:
        return JSON(current.public())
    if "name" in changes:
        changes["name"] = merged.name.strip()
    updated = await _store(model.update_game(services.pool, game_id, changes))
    if updated is None:
        raise not_found(f"no game {game_id!r}")
    _cache(request).forget(game_id)
    return JSON(updated.public())


@spec(
    summary="Set the points of an action (admin)",
    tag="games",
    body=PointsIn,
    response=shape("ActionPoints", game=Slug, action=ActionName, points=Score),
    example={"points": 10},
    path={**GAME, **ACTION},
    auth=True,
    errors=(403, 404, 503),
)
async def put_action(request: Request) -> Response:
    await require_admin(request)
    services = _services(request)
    game_id = read_path(request, GAME)["game"]
    action = read_path(request, ACTION, creates=True)["action"]
    body = await read_json(request, PointsIn, services.settings.max_body_bytes)
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
    response=ActionList,
    path=GAME,
    auth=True,
    errors=(404, 503),
)
async def list_actions(request: Request) -> Response:
    await require_principal(request)
    services = _services(request)
    game_id = read_path(request, GAME)["game"]
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
