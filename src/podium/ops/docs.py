"""`/docs`: Swagger UI over `/openapi.json`, served from the `swagger-ui-bundle` wheel.

No CDN (the machine may be offline) and no inline script (the CSP forbids it): the
page loads the bundle and `docs-init.js` from `/docs/static/`, all same-origin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import swagger_ui_bundle
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from podium.api.spec import Param, spec
from podium.errors import not_found

BUNDLE_DIR = Path(swagger_ui_bundle.swagger_ui_path)
INIT_SCRIPT = Path(__file__).with_name("docs_init.js")

# The only files served, so a request can never reach outside these two places.
STATIC_FILES: dict[str, tuple[Path, str]] = {
    "swagger-ui.css": (BUNDLE_DIR / "swagger-ui.css", "text/css; charset=utf-8"),
    "swagger-ui-bundle.js": (BUNDLE_DIR / "swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui-standalone-preset.js": (
        BUNDLE_DIR / "swagger-ui-standalone-preset.js",
        "text/javascript; charset=utf-8",
    ),
    "favicon-32x32.png": (BUNDLE_DIR / "favicon-32x32.png", "image/png"),
    "docs-init.js": (INIT_SCRIPT, "text/javascript; charset=utf-8"),
}

# The document lists them: a client can know every name this route serves.
StaticName = Literal[tuple(STATIC_FILES)]  # type: ignore[valid-type]

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Podium API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
</head>
<body>
  <noscript>The API description is at <a href="/openapi.json">/openapi.json</a>.</noscript>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/static/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/static/docs-init.js"></script>
</body>
</html>
"""

_cache: dict[str, bytes] = {}


@spec(summary="API docs page (Swagger UI)", tag="ops", response=str, media_type="text/html")
async def docs_page(request: Request) -> Response:
    return HTMLResponse(PAGE, headers={"cache-control": "no-cache"})


@spec(
    summary="A file of the API docs page",
    tag="ops",
    response=str,
    media_type="*/*",
    path={"name": Param(StaticName, "one of the bundled Swagger UI files, or docs-init.js")},
    errors=(404,),
)
async def docs_static(request: Request) -> Response:
    name = request.path_params["name"]
    found = STATIC_FILES.get(name)
    if found is None:
        raise not_found("no such file")
    path, media_type = found
    body = _cache.get(name)
    if body is None:
        body = _cache[name] = path.read_bytes()
    # The bundle's version is pinned by the lock file; an hour keeps reloads cheap.
    return Response(body, media_type=media_type, headers={"cache-control": "public, max-age=3600"})
