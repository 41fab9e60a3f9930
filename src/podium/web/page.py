"""The web page: `/` serves index.html, `/static/<name>` its scripts, styles and icons.

Only the files in this directory with a known type are served, read once at import, so
a request can never reach outside it. Assets are small and not fingerprinted: each
response carries an ETag and `no-cache`, so a browser revalidates (304) and never
runs a stale app.js against a newer server.

`podium.js` is the npm package's module (clients/js, one source for the page and for a
game's bundler): a checkout serves that file itself, a wheel carries it here.
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
CLIENT_MODULE = "podium.js"
# In a checkout (and an editable install) the package's own file; in a wheel, its copy.
CLIENT_SOURCES = (
    WEB_DIR.parents[2] / "clients" / "js" / CLIENT_MODULE,
    WEB_DIR / CLIENT_MODULE,
)

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


def client_module_path() -> Path:
    """Where the JS client module is: the first of CLIENT_SOURCES that exists."""
    for path in CLIENT_SOURCES:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{CLIENT_MODULE} is in none of {[str(p) for p in CLIENT_SOURCES]}")


def load_assets(directory: Path = WEB_DIR) -> dict[str, Asset]:
    """Every servable file in `directory`, by name (no subdirectories, no Python), and
    the JS client module."""
    assets = {
        path.name: Asset(path)
        for path in sorted(directory.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }
    assets[CLIENT_MODULE] = Asset(client_module_path())
    return assets


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
