"""The web page's files as served: types, caching, security headers, nothing external."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

from podium.web.page import ASSETS, WEB_DIR
from tests.conftest import RunningApp

# URLs that are names, not fetches: the SVG XML namespace.
NAMESPACE_URLS = {"http://www.w3.org/2000/svg"}
URL_RE = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'`)]*""")


@pytest.fixture
async def web(server: RunningApp) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


async def test_page_is_served_with_security_headers(web: httpx.AsyncClient) -> None:
    r = await web.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Podium" in r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    csp = csp_directives(r.headers["content-security-policy"])
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    for name, values in csp.items():
        assert "'unsafe-inline'" not in values and "'unsafe-eval'" not in values, name
        for value in values:
            # Only keywords, 'self' and data: images: no other origin, no scheme wildcard.
            assert value.startswith("'") or value == "data:", f"{name} allows {value}"


async def test_assets_have_their_content_types(web: httpx.AsyncClient) -> None:
    expected = {
        "/static/podium.js": "text/javascript; charset=utf-8",
        "/static/app.js": "text/javascript; charset=utf-8",
        "/static/style.css": "text/css; charset=utf-8",
        "/static/favicon.svg": "image/svg+xml",
    }
    for path, content_type in expected.items():
        r = await web.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"] == content_type, path
        assert r.headers["cache-control"] == "no-cache"
        assert "content-security-policy" in r.headers


async def test_etag_revalidation_answers_304(web: httpx.AsyncClient) -> None:
    for path in ("/", "/static/app.js"):
        first = await web.get(path)
        etag = first.headers["etag"]
        again = await web.get(path, headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        changed = await web.get(path, headers={"if-none-match": '"something-else"'})
        assert changed.status_code == 200 and changed.content == first.content


@pytest.mark.parametrize(
    "path",
    [
        "/static/page.py",
        "/static/__init__.py",
        "/static/index.html",
        "/static/../app.py",
        "/static/%2e%2e/page.py",
        "/static/nope.js",
        "/static/",
        "/index.html",
    ],
)
async def test_only_the_page_files_are_served(web: httpx.AsyncClient, path: str) -> None:
    r = await web.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


async def test_api_routes_are_not_shadowed(web: httpx.AsyncClient) -> None:
    r = await web.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await web.get("/api/v1/auth/me")
    assert r.status_code == 401


class _InlineFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.labels: set[str] = set()
        self.controls: list[str] = []
        self._in_template = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...> is blocked by the CSP")
        if tag == "style":
            self.problems.append("<style> element is blocked by the CSP")
        if tag == "script" and not named.get("src"):
            self.problems.append("inline <script> is blocked by the CSP")
        if tag == "label" and named.get("for"):
            self.labels.add(str(named["for"]))
        if tag in ("input", "select", "textarea") and named.get("type") != "hidden":
            self.controls.append(str(named.get("id")))


def test_page_has_no_inline_code_and_every_control_has_a_label() -> None:
    finder = _InlineFinder()
    finder.feed((WEB_DIR / "index.html").read_text())
    assert finder.problems == []
    unlabelled = [c for c in finder.controls if c not in finder.labels]
    assert finder.controls and unlabelled == []


def test_assets_load_nothing_from_elsewhere() -> None:
    assert {"index.html", "podium.js", "app.js", "style.css"} <= set(ASSETS)
    for name, asset in ASSETS.items():
        text = asset.body.decode()
        urls = [u for u in URL_RE.findall(text) if u not in NAMESPACE_URLS]
        # podium.js documents a placeholder host in a comment; nothing is fetched from it.
        urls = [u for u in urls if "podium.example" not in u]
        assert urls == [], f"{name} refers to {urls}"
        assert "@import" not in text and "fonts.googleapis" not in text
