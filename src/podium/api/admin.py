"""/api/v1/admin: operator actions (admin only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.responses import JSON
from podium.api.spec import Param, spec
from podium.auth.guards import require_admin
from podium.auth.revocation import void_identity
from podium.boards.scripts import Scripts
from podium.boards.void import VoidOut, void_user
from podium.errors import conflict, not_found
from podium.services import Services


@spec(
    summary="Void a user's scores (cheater): every board recomputes",
    tag="admin",
    response=VoidOut,
    path={"user_id": Param(int, "the user to void")},
    auth=True,
    errors=(403, 404, 409, 503),
)
async def void(request: Request) -> Response:
    """Void a user: their events stay in the log, marked void; they leave every board."""
    principal = await require_admin(request)
    services: Services = request.app.state.podium
    try:
        user_id = int(request.path_params["user_id"])
    except ValueError:
        raise not_found("no such user") from None
    if user_id == principal.user_id:
        # An admin voiding itself would lock the last admin out: another admin must.
        raise conflict("an admin cannot void itself", code="self_void")
    scripts: Scripts = services.extras["scripts"]  # type: ignore[assignment]
    out = await void_user(services, scripts, user_id)
    await void_identity(services, user_id)
    return JSON(out)


routes = [Route("/admin/users/{user_id}/void", void, methods=["POST"])]
