"""/api/v1/admin: operator actions (admin only)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.responses import JSON, read_path
from podium.api.spec import Param, spec
from podium.auth.guards import require_admin
from podium.boards.scripts import Scripts
from podium.boards.void import VoidOut, void_user
from podium.services import Services
from podium.validation import UserId

USER = {"user_id": Param(UserId, "the user to void")}


@spec(
    summary="Void a user's scores (cheater): every board recomputes",
    tag="admin",
    response=VoidOut,
    path=USER,
    auth=True,
    errors=(403, 404, 503),
)
async def void(request: Request) -> Response:
    """Void a user: their events stay in the log, marked void; they leave every board."""
    await require_admin(request)
    services: Services = request.app.state.podium
    user_id = read_path(request, USER)["user_id"]
    scripts: Scripts = services.extras["scripts"]  # type: ignore[assignment]
    return JSON(await void_user(services, scripts, user_id))


routes = [Route("/admin/users/{user_id}/void", void, methods=["POST"])]
