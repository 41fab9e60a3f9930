"""/api/v1/reports/top: the top players of a date range, as JSON or CSV."""

from __future__ import annotations

from datetime import date
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.podium import podium_of
from podium.api.responses import JSON, read_query
from podium.api.spec import Param, spec
from podium.auth.guards import require_principal
from podium.boards.top_report import Report, report_csv, top_report
from podium.validation import MAX_REPORT_LIMIT, ReportLimit, Slug

QUERY = {
    "start": Param(date, "first day (UTC), inclusive", required=True),
    "end": Param(date, "the day after the last (UTC): exclusive, after `start`", required=True),
    "limit": Param(ReportLimit, f"rows, 1..{MAX_REPORT_LIMIT}", default=10),
    "game": Param(Slug, "a game id; all games when absent"),
    "format": Param(Literal["json", "csv"], "json or csv", default="json"),
}


@spec(
    summary="Top players of a date range, per game or all games, as JSON or CSV",
    tag="reports",
    response=Report,
    alternatives={"text/csv": str},
    query=QUERY,
    auth=True,
    errors=(404, 422, 429, 503),
)
async def top(request: Request) -> Response:
    principal = await require_principal(request)
    q = read_query(request, QUERY)
    fmt = q["format"]
    podium = podium_of(request)
    report = await top_report(
        podium.services,
        podium.boards,
        principal,
        request.client.host if request.client else None,
        q["start"],
        q["end"],
        q["limit"],
        q["game"],
    )
    if fmt == "csv":
        name = f"top-{report.game or 'all'}-{report.start}-{report.end}.csv"
        return Response(
            report_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return JSON(report)


routes = [Route("/reports/top", top, methods=["GET"])]
