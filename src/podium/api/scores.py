"""POST /api/v1/scores: submit a score (players for themselves, services for anyone)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.responses import JSON, read_json
from podium.auth.guards import require_principal
from podium.boards.scores import ScoreIn, submit_score
from podium.services import Services


async def post_score(request: Request) -> Response:
    principal = await require_principal(request)
    services: Services = request.app.state.podium
    body = await read_json(request, ScoreIn, services.settings.max_body_bytes)
    client = request.client.host if request.client else "unknown"
    return JSON(await submit_score(services, principal, body, client))


routes = [Route("/scores", post_score, methods=["POST"])]
