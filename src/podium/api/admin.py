"""/api/v1/admin: operator actions (admin only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.podium import podium_of
from podium.api.responses import JSON, read_path
from podium.api.spec import Param, spec
from podium.auth.guards import require_admin
from podium.auth.revocation import void_identity
from podium.boards.void import VoidOut, void_user
from podium.errors import conflict
from podium.validation import UserId

USER = {"user_id": Param(UserId, "the user to void")}


@spec(
    summary="Void a user's scores (cheater): every board recomputes",
    tag="admin",
    response=VoidOut,
    path=USER,
    auth=True,
    errors=(403, 404, 409, 503),
)
async def void(request: Request) -> Response:
    """Void a user: their events stay in the log, marked void; they leave every board."""
    principal = await require_admin(request)
    podium = podium_of(request)
    user_id = read_path(request, USER)["user_id"]
    if user_id == principal.user_id:
        # An admin voiding itself would lock the last admin out: another admin must.
        raise conflict("an admin cannot void itself", code="self_void")
    out = await void_user(podium.services, podium.boards, user_id)
    await void_identity(podium.services, user_id)
    return JSON(out)


routes = [Route("/admin/users/{user_id}/void", void, methods=["POST"])]
