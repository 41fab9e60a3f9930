"""/api/v1/reports/top: the top players of a date range, as JSON or CSV."""

from __future__ import annotations

from datetime import date
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from podium.api.podium import podium_of
from podium.api.responses import JSON
from podium.api.spec import Param, spec
from podium.auth.guards import require_principal
from podium.boards.top_report import Report, report_csv, top_report
from podium.errors import invalid


def _required_date(request: Request, name: str) -> date:
    raw = request.query_params.get(name)
    if not raw:
        raise invalid(f"{name} is required", {name: "YYYY-MM-DD"})
    try:
        return date.fromisoformat(raw[:10])
    except ValueError:
        raise invalid(f"{name} must be a date", {name: "YYYY-MM-DD"}) from None


@spec(
    summary="Top players of a date range, per game or all games, as JSON or CSV",
    tag="reports",
    response=Report,
    alternatives={"text/csv": str},
    query={
        "start": Param(date, "first day (UTC), inclusive", required=True),
        "end": Param(date, "the day after the last (UTC): end is exclusive", required=True),
        "limit": Param(int, "rows (default 10)"),
        "game": Param(str, "a game id; all games when absent"),
        "format": Param(Literal["json", "csv"], "json (default) or csv"),
    },
    auth=True,
    errors=(404, 422, 429, 503),
)
async def top(request: Request) -> Response:
    principal = await require_principal(request)
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise invalid("unknown format", {"format": "json or csv"})
    try:
        limit = int(request.query_params.get("limit", "10"))
    except ValueError:
        raise invalid("limit must be an integer", {"limit": "an integer"}) from None
    podium = podium_of(request)
    report = await top_report(
        podium.services,
        podium.boards,
        principal,
        request.client.host if request.client else None,
        _required_date(request, "start"),
        _required_date(request, "end"),
        limit,
        request.query_params.get("game") or None,
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
