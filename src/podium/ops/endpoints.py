"""The ops endpoints: `/metrics`, `/openapi.json` and the `/docs` page, at the root."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from podium import metrics
from podium.api.responses import JSON
from podium.api.spec import spec
from podium.auth.guards import require_metrics_access
from podium.ops import openapi
from podium.ops.docs import docs_page, docs_static


@spec(
    summary="Prometheus metrics of this instance",
    tag="ops",
    response=str,
    media_type="text/plain",
    errors=(404,),
    description="Prometheus text exposition format. Scrape each instance directly, from an"
    " address in PODIUM_METRICS_ALLOW or with the PODIUM_METRICS_TOKEN bearer; others get 404."
    " Under `serve --workers N` each worker counts its own and a scrape reaches one of them"
    " (named by the x-podium-instance header).",
)
async def metrics_endpoint(request: Request) -> Response:
    require_metrics_access(request)
    body, content_type = metrics.exposition()
    return Response(body, headers={"content-type": content_type, "cache-control": "no-store"})


@spec(summary="This OpenAPI document", tag="ops", response=dict[str, Any])
async def openapi_document(request: Request) -> Response:
    # Routes are fixed once the app is built: build the document once per app.
    document = getattr(request.app.state, "openapi", None)
    if document is None:
        document = request.app.state.openapi = openapi.build(request.app.routes)
    return JSON(document)


routes: list[BaseRoute] = [
    Route("/metrics", metrics_endpoint, methods=["GET"]),
    Route("/openapi.json", openapi_document, methods=["GET"]),
    Route("/docs", docs_page, methods=["GET"]),
    Route("/docs/static/{name}", docs_static, methods=["GET"]),
]
