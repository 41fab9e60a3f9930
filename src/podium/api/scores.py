"""POST /api/v1/scores: submit a score (players for themselves, services for anyone)."""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium import metrics
from podium.api.podium import podium_of
from podium.api.responses import JSON, read_json, validation_details
from podium.api.spec import spec
from podium.auth.guards import require_principal
from podium.boards.submit import ScoreOut, submit_score
from podium.errors import ApiError, invalid
from podium.protocol import ScoreIn


def score_in(message: msgspec.Struct) -> ScoreIn:
    """A WebSocket `score` message as a ScoreIn, refused (422) like an HTTP body."""
    try:
        return msgspec.convert(msgspec.structs.asdict(message), ScoreIn)
    except msgspec.ValidationError as exc:
        metrics.WRITES.labels("refused").inc()
        raise invalid("score message is invalid", validation_details(str(exc))) from None


@spec(
    summary="Submit a score or an action; acknowledged once durable",
    tag="scores",
    body=ScoreIn,
    response=ScoreOut,
    example={"game": "chess", "event_id": "5f0c6a1e-8d4b-4a37-9a51-2f1d3c0b7e11", "score": 1200},
    auth=True,
    errors=(403, 404, 409, 422, 429, 503),
    description=(
        "`event_id` (a client-made UUID) makes the write idempotent: the same id again "
        "returns the first result; the same id with another payload is 409. Players "
        "write for themselves as their game's policy allows; service credentials may "
        "name `user_id`."
    ),
)
async def post_score(request: Request) -> Response:
    principal = await require_principal(request)
    podium = podium_of(request)
    services = podium.services
    try:
        body = await read_json(request, ScoreIn, services.settings.max_body_bytes)
    except ApiError:
        metrics.WRITES.labels("refused").inc()
        raise
    client = request.client.host if request.client else "unknown"
    return JSON(await submit_score(services, podium.boards, principal, body, client))


routes = [Route("/scores", post_score, methods=["POST"])]
