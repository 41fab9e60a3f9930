"""Schemathesis hooks for the HTTP fuzz (loaded through SCHEMATHESIS_HOOKS).

Two rules of the API cannot be stated in an OpenAPI 3.0 schema; without these hooks
`positive_data_acceptance` would report them although the document describes them:
a `cursor` is only what a previous page returned (400 otherwise), and a game's
`min_score` must not exceed its `max_score` (422), also across a PATCH and the stored
game. Negative cases are left alone: they must still be refused.
"""

from __future__ import annotations

from typing import Any

import schemathesis


def _positive(case: Any) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if _positive(case) and isinstance(case.query, dict):
        case.query.pop("cursor", None)
    return case


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    if not _positive(case) or not isinstance(case.body, dict):
        return True
    if case.operation.label not in ("POST /api/v1/games", "PATCH /api/v1/games/{game}"):
        return True
    low, high = case.body.get("min_score"), case.body.get("max_score")
    if case.operation.method.upper() == "PATCH" and (low is None) != (high is None):
        return False  # one bound against the stored other one: state the schema cannot know
    return low is None or high is None or low <= high
