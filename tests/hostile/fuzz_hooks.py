"""Schemathesis hooks for the HTTP fuzz (loaded through SCHEMATHESIS_HOOKS).

Two rules of the API cannot be stated in an OpenAPI 3.0 schema; without these hooks
`positive_data_acceptance` would report them although the document describes them:
a `cursor` is only what a previous page returned (400 otherwise), a game's
`min_score` must not exceed its `max_score` (422), also across a PATCH and the stored
game, and a report's `end` must come after its `start`, at most 3,660 days later (422).
Negative cases are left alone: they must still be refused.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import schemathesis

from podium.boards.top_report import MAX_RANGE_DAYS


def _positive(case: Any) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if _positive(case) and isinstance(case.query, dict):
        case.query.pop("cursor", None)
    return case


def _report_range_ok(query: dict[str, Any]) -> bool:
    try:
        start, end = date.fromisoformat(query["start"]), date.fromisoformat(query["end"])
    except (KeyError, TypeError, ValueError):
        return True  # not a range the server compares: the schema decides
    return start < end and (end - start).days <= MAX_RANGE_DAYS


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    if _positive(case) and case.operation.label == "GET /api/v1/reports/top":
        return isinstance(case.query, dict) and _report_range_ok(case.query)
    if not _positive(case) or not isinstance(case.body, dict):
        return True
    if case.operation.label not in ("POST /api/v1/games", "PATCH /api/v1/games/{game}"):
        return True
    low, high = case.body.get("min_score"), case.body.get("max_score")
    if case.operation.method.upper() == "PATCH" and (low is None) != (high is None):
        return False  # one bound against the stored other one: state the schema cannot know
    return low is None or high is None or low <= high
