"""/api/v1/leaderboards and /api/v1/users/{id}/ranks: every read, any authenticated user."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Annotated, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.podium import podium_of
from podium.api.responses import JSON, read_path, read_query
from podium.api.spec import Param, shape, spec
from podium.auth.guards import require_principal
from podium.auth.tokens import Principal
from podium.boards import ranks
from podium.boards.runtime import Boards
from podium.errors import invalid, not_found, unavailable
from podium.services import Services
from podium.store.db import is_unavailable
from podium.validation import PageLimit, PageOffset, Period, Slug, UserId, user_id_of

MAX_MEMBERS = 100
# Comma-separated user ids: 1 to MAX_MEMBERS decimal numbers of at most 19 digits.
IdList = Annotated[
    str,
    msgspec.Meta(
        pattern=rf"^[0-9]{{1,19}}(,[0-9]{{1,19}}){{0,{MAX_MEMBERS - 1}}}(?!\n)$",
        min_length=1,
        max_length=20 * MAX_MEMBERS,
    ),
]
Radius = Annotated[int, msgspec.Meta(ge=0, le=ranks.MAX_RADIUS)]
# A `next_cursor` is a short token (its content is checked when decoded: 400).
Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]

GAME = {"game": Param(Slug, "a game id, or `global` (all `desc` games summed)")}
USER_ID = {"user_id": Param(UserId, "a user id")}
USER = {"user_id": Param(UserId | Literal["me"], "a user id, or `me`")}
BOARD_QUERY = {
    "period": Param(Period, "all (default), day, week or month", default="all"),
    "at": Param(date, "a UTC date inside the period (default: today)"),
}
PAGE_QUERY = {
    **BOARD_QUERY,
    "offset": Param(PageOffset, "rows to skip (default 0)", default=0),
    "limit": Param(PageLimit, "rows, 1..200 (default 10)", default=10),
    "ranking": Param(
        Literal["ordinal", "competition"],
        "ordinal 1,2,3 (default) or competition 1,1,3",
        default="ordinal",
    ),
    "cursor": Param(Cursor, "`next_cursor` of the previous page"),
}
AROUND_QUERY = {**BOARD_QUERY, "radius": Param(Radius, "rows above and below, 0..50", default=5)}
MEMBERS_QUERY = {
    **BOARD_QUERY,
    "ids": Param(IdList, "comma-separated user ids, 1..100", required=True),
}


def _services(request: Request) -> Services:
    return podium_of(request).services


def _boards(request: Request) -> Boards:
    return podium_of(request).boards


def _named_user(request: Request, principal: Principal, params: Mapping[str, Param]) -> int:
    """The user id a path names (`me`: the caller), not yet known to exist."""
    raw: int | str = read_path(request, params)["user_id"]
    if raw == "me":
        if principal.user_id is None:
            raise invalid("a service credential has no 'me'", {"user_id": "give an id"})
        return principal.user_id
    if not isinstance(raw, int):
        raise not_found("no such user")
    return raw


async def _target_user(request: Request, principal: Principal, params: Mapping[str, Param]) -> int:
    """The user a path names: an existing user's id, or `me` for the caller."""
    user_id = _named_user(request, principal, params)
    if user_id != principal.user_id and not await _user_exists(_services(request), user_id):
        raise not_found("no such user")
    return user_id


async def _user_exists(services: Services, user_id: int) -> bool:
    # Voided users exist: an operator still reads what is left of them.
    try:
        row = await services.pool.fetchval("SELECT 1 FROM users WHERE id = $1", user_id)
    except Exception as exc:
        if is_unavailable(exc):
            raise unavailable("the user store is unavailable") from None
        raise
    return row is not None


@spec(
    summary="A page of a board: rank, user, name, score, achieved at",
    tag="leaderboards",
    response=ranks.Page,
    path=GAME,
    query=PAGE_QUERY,
    auth=True,
    errors=(400, 404, 422, 503),
)
async def board_page(request: Request) -> Response:
    await require_principal(request)
    game = read_path(request, GAME)["game"]
    q = read_query(request, PAGE_QUERY)
    page = await ranks.top_page(
        _services(request),
        _boards(request),
        game,
        q["period"],
        q["at"],
        q["offset"],
        q["limit"],
        q["ranking"] == "competition",
        q["cursor"],
        podium_of(request).realtime.hub.live_page,
    )
    return JSON(page)


@spec(
    summary="The rows around a user (radius above and below)",
    tag="leaderboards",
    response=ranks.Page,
    path={**GAME, **USER_ID},
    query=AROUND_QUERY,
    auth=True,
    errors=(404, 422, 503),
)
async def board_around(request: Request) -> Response:
    await require_principal(request)
    path = read_path(request, {**GAME, **USER_ID})
    q = read_query(request, AROUND_QUERY)
    page = await ranks.around(
        _services(request),
        _boards(request),
        path["game"],
        path["user_id"],
        q["radius"],
        q["period"],
        q["at"],
    )
    return JSON(page)


@spec(
    summary="Rank and score of one user on a board",
    tag="leaderboards",
    response=ranks.UserRank,
    path={**GAME, **USER},
    query=BOARD_QUERY,
    auth=True,
    errors=(404, 422, 503),
)
async def board_user(request: Request) -> Response:
    principal = await require_principal(request)
    game = read_path(request, GAME)["game"]
    q = read_query(request, BOARD_QUERY)
    user_id = _named_user(request, principal, USER)
    result = await ranks.user_rank(
        _services(request), _boards(request), game, user_id, q["period"], q["at"]
    )
    # A user on the board exists (a void removes its rows): only an absent one costs the
    # existence query, which tells "not on this board" from "no such user".
    if result.rank is None and user_id != principal.user_id:
        if not await _user_exists(_services(request), user_id):
            raise not_found("no such user")
    return JSON(result)


@spec(
    summary="Ranks of a list of users (friends)",
    tag="leaderboards",
    response=ranks.MembersPage,
    path=GAME,
    query=MEMBERS_QUERY,
    auth=True,
    description="An id that names no user is listed in `missing`, like one not on the board.",
    errors=(404, 422, 503),
)
async def board_members(request: Request) -> Response:
    await require_principal(request)
    game = read_path(request, GAME)["game"]
    q = read_query(request, MEMBERS_QUERY)
    ids = list(dict.fromkeys(int(x) for x in q["ids"].split(",")))
    # An id wider than int64 (or 0) names no user: missing, like any unknown id.
    wild = [uid for uid in ids if user_id_of(str(uid)) is None]
    found = [uid for uid in ids if uid not in wild]
    result = await ranks.members(
        _services(request), _boards(request), game, found, q["period"], q["at"]
    )
    result.missing += wild
    return JSON(result)


@spec(
    summary="Every board of one user, with rank and percentile",
    tag="leaderboards",
    response=shape("UserBoards", user_id=UserId, boards=list[ranks.UserRank]),
    path=USER,
    auth=True,
    errors=(404, 422, 503),
)
async def user_ranks(request: Request) -> Response:
    principal = await require_principal(request)
    user_id = await _target_user(request, principal, USER)
    boards = await ranks.boards_of_user(_services(request), _boards(request), user_id)
    return JSON({"user_id": user_id, "boards": boards})


routes = [
    Route("/leaderboards/{game}", board_page, methods=["GET"]),
    Route("/leaderboards/{game}/around/{user_id}", board_around, methods=["GET"]),
    Route("/leaderboards/{game}/users/{user_id}", board_user, methods=["GET"]),
    Route("/leaderboards/{game}/members", board_members, methods=["GET"]),
    Route("/users/{user_id}/ranks", user_ranks, methods=["GET"]),
]
