"""The web page: `/` serves index.html, `/static/<name>` its scripts, styles and icons.

Only the files in this directory with a known type are served, read once at import, so
a request can never reach outside it. Assets are small and not fingerprinted: each
response carries an ETag and `no-cache`, so a browser revalidates (304) and never
runs a stale app.js against a newer server.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from podium.api.spec import Param, spec
from podium.errors import not_found

WEB_DIR = Path(__file__).parent

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}


class Asset:
    """One file's bytes, type and validator."""

    def __init__(self, path: Path) -> None:
        self.body = path.read_bytes()
        self.content_type = CONTENT_TYPES[path.suffix]
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'

    def response(self, request: Request) -> Response:
        headers = {"etag": self.etag, "cache-control": "no-cache"}
        if self.etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.content_type, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def load_assets(directory: Path = WEB_DIR) -> dict[str, Asset]:
    """Every servable file in `directory`, by name (no subdirectories, no Python)."""
    return {
        path.name: Asset(path)
        for path in sorted(directory.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


ASSETS = load_assets()


@spec(summary="The web page", tag="web", response=str, media_type="text/html")
async def index(request: Request) -> Response:
    return ASSETS["index.html"].response(request)


@spec(
    summary="A script, style or icon of the web page",
    tag="web",
    response=str,
    media_type="*/*",
    path={"name": Param(str, "a file name, e.g. app.js")},
    errors=(404,),
)
async def static(request: Request) -> Response:
    asset = ASSETS.get(request.path_params["name"])
    if asset is None or asset.content_type.startswith("text/html"):
        raise not_found("no such file")
    return asset.response(request)


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET", "HEAD"]),
    Route("/static/{name}", static, methods=["GET", "HEAD"]),
]
