"""/api/v1/leaderboards and /api/v1/users/{id}/ranks: every read, any authenticated user."""

from __future__ import annotations

from datetime import date
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.responses import JSON
from podium.api.spec import Param, shape, spec
from podium.auth.guards import require_principal
from podium.auth.tokens import Principal
from podium.boards import ranks
from podium.boards.periods import Period
from podium.errors import invalid
from podium.services import Services

MAX_MEMBERS = 100

GAME = {"game": Param(str, "a game id, or `global` (all `desc` games summed)")}
BOARD_QUERY = {
    "period": Param(Period, "all (default), day, week or month"),
    "at": Param(date, "a UTC date inside the period (default: today)"),
}
USER = {"user_id": Param(int | Literal["me"], "a user id, or `me`")}


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer", {name: "an integer"}) from None


def _date(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise invalid(f"{name} must be a date", {name: "YYYY-MM-DD"}) from None


def _user_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise invalid("user id must be an integer", {"user_id": "an integer"}) from None
    if value <= 0:
        raise invalid("user id must be positive", {"user_id": "> 0"})
    return value


def _target_user(principal: Principal, raw: str) -> int:
    """The user a path names: an id, or `me` for the caller."""
    if raw != "me":
        return _user_id(raw)
    if principal.user_id is None:
        raise invalid("a service credential has no 'me'", {"user_id": "give an id"})
    return principal.user_id


def _services(request: Request) -> Services:
    return request.app.state.podium


@spec(
    summary="A page of a board: rank, user, name, score, achieved at",
    tag="leaderboards",
    response=ranks.Page,
    path=GAME,
    query={
        **BOARD_QUERY,
        "offset": Param(int, "rows to skip (default 0)"),
        "limit": Param(int, "rows, 1..200 (default 10)"),
        "ranking": Param(Literal["ordinal", "competition"], "ordinal 1,2,3 or competition 1,1,3"),
        "cursor": Param(str, "`next_cursor` of the previous page"),
    },
    auth=True,
    errors=(400, 404, 422),
)
async def board_page(request: Request) -> Response:
    await require_principal(request)
    ranking = request.query_params.get("ranking", "ordinal")
    if ranking not in ("ordinal", "competition"):
        raise invalid("unknown ranking", {"ranking": "ordinal or competition"})
    page = await ranks.top_page(
        _services(request),
        request.path_params["game"],
        request.query_params.get("period", "all"),
        _date(request, "at"),
        _int(request, "offset", 0),
        _int(request, "limit", 10),
        ranking == "competition",
        request.query_params.get("cursor") or None,
    )
    return JSON(page)


@spec(
    summary="The rows around a user (radius above and below)",
    tag="leaderboards",
    response=ranks.Page,
    path={**GAME, "user_id": Param(int, "a user id")},
    query={**BOARD_QUERY, "radius": Param(int, "rows above and below, 0..50 (default 5)")},
    auth=True,
    errors=(404, 422),
)
async def board_around(request: Request) -> Response:
    await require_principal(request)
    page = await ranks.around(
        _services(request),
        request.path_params["game"],
        _user_id(request.path_params["user_id"]),
        _int(request, "radius", 5),
        request.query_params.get("period", "all"),
        _date(request, "at"),
    )
    return JSON(page)


@spec(
    summary="Rank and score of one user on a board",
    tag="leaderboards",
    response=ranks.UserRank,
    path={**GAME, **USER},
    query=BOARD_QUERY,
    auth=True,
    errors=(404, 422),
)
async def board_user(request: Request) -> Response:
    principal = await require_principal(request)
    user_id = _target_user(principal, request.path_params["user_id"])
    result = await ranks.user_rank(
        _services(request),
        request.path_params["game"],
        user_id,
        request.query_params.get("period", "all"),
        _date(request, "at"),
    )
    return JSON(result)


@spec(
    summary="Ranks of a list of users (friends)",
    tag="leaderboards",
    response=ranks.MembersPage,
    path=GAME,
    query={**BOARD_QUERY, "ids": Param(str, "comma-separated user ids, 1..100", required=True)},
    auth=True,
    errors=(404, 422),
)
async def board_members(request: Request) -> Response:
    await require_principal(request)
    raw = request.query_params.get("ids", "")
    try:
        ids = list(dict.fromkeys(int(x) for x in raw.split(",") if x.strip()))
    except ValueError:
        raise invalid("ids must be integers", {"ids": "comma-separated user ids"}) from None
    if not 1 <= len(ids) <= MAX_MEMBERS:
        raise invalid("between 1 and 100 ids", {"ids": f"1..{MAX_MEMBERS} user ids"})
    result = await ranks.members(
        _services(request),
        request.path_params["game"],
        ids,
        request.query_params.get("period", "all"),
        _date(request, "at"),
    )
    return JSON(result)


@spec(
    summary="Every board of one user, with rank and percentile",
    tag="leaderboards",
    response=shape("UserBoards", user_id=int, boards=list[ranks.UserRank]),
    path=USER,
    auth=True,
    errors=(422,),
)
async def user_ranks(request: Request) -> Response:
    principal = await require_principal(request)
    user_id = _target_user(principal, request.path_params["user_id"])
    boards = await ranks.boards_of_user(_services(request), user_id)
    return JSON({"user_id": user_id, "boards": boards})


routes = [
    Route("/leaderboards/{game}", board_page, methods=["GET"]),
    Route("/leaderboards/{game}/around/{user_id}", board_around, methods=["GET"]),
    Route("/leaderboards/{game}/users/{user_id}", board_user, methods=["GET"]),
    Route("/leaderboards/{game}/members", board_members, methods=["GET"]),
    Route("/users/{user_id}/ranks", user_ranks, methods=["GET"]),
]
