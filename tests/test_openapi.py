"""/openapi.json: complete (every route), well-formed, true to the running server; /docs."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount

from podium.api import admin, auth, games, health, leaderboards, reports, scores
from podium.app import create_app
from podium.ops import openapi
from podium.settings import Settings
from tests.conftest import Account, RunningApp

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# The OpenAPI 3.0 Schema Object (3.1-only keywords such as prefixItems, const or a list
# of types are errors: the bundled Swagger UI reads 3.0).
SCHEMA_KEYWORDS = {
    "$ref", "type", "properties", "required", "items", "anyOf", "oneOf", "allOf", "not",
    "enum", "title", "description", "format", "minItems", "maxItems", "uniqueItems",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
    "pattern", "additionalProperties", "default", "example", "nullable", "discriminator",
    "minProperties", "maxProperties", "multipleOf", "readOnly", "writeOnly", "deprecated",
}  # fmt: skip
JSON_TYPES = {"null", "boolean", "integer", "number", "string", "array", "object"}


# --- a small JSON Schema checker (the keywords msgspec emits) -------------------------


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def _is(value: Any, type_: str) -> bool:
    match type_:
        case "null":
            return value is None
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "string":
            return isinstance(value, str)
        case "array":
            return isinstance(value, list)
        case "object":
            return isinstance(value, dict)
    raise AssertionError(f"unknown type {type_}")


def conforms(document: dict[str, Any], value: Any, schema: dict[str, Any], at: str = "$") -> None:
    """Raise AssertionError when `value` does not fit `schema`."""
    if "$ref" in schema:
        conforms(document, value, resolve(document, schema["$ref"]), at)
        return
    if value is None and schema.get("nullable") is True:
        return
    for part in schema.get("allOf", []):
        conforms(document, value, part, at)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            fits = 0
            for option in schema[key]:
                try:
                    conforms(document, value, option, at)
                    fits += 1
                except AssertionError:
                    pass
            assert fits >= 1, f"{at}: {value!r} fits none of {schema[key]}"
    if "enum" in schema:
        assert value in schema["enum"], f"{at}: {value!r} not in {schema['enum']}"
    if "const" in schema:
        assert value == schema["const"], f"{at}: {value!r} != {schema['const']!r}"
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(_is(value, t) for t in types), f"{at}: {value!r} is not {types}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            assert name in value, f"{at}: missing {name!r}"
        for name, item in value.items():
            if name in props:
                conforms(document, item, props[name], f"{at}.{name}")
            elif schema.get("additionalProperties") is False:
                raise AssertionError(f"{at}: unexpected {name!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                conforms(document, item, schema["additionalProperties"], f"{at}.{name}")
    if isinstance(value, list):
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            if i < len(prefix):
                conforms(document, item, prefix[i], f"{at}[{i}]")
            elif "items" in schema:
                conforms(document, item, schema["items"], f"{at}[{i}]")


def check_schema(document: dict[str, Any], schema: Any, at: str) -> None:
    """A schema uses only known keywords and types, and its $refs resolve."""
    assert isinstance(schema, dict), at
    unknown = set(schema) - SCHEMA_KEYWORDS
    assert not unknown, f"{at}: unknown keywords {unknown}"
    if "$ref" in schema:
        assert isinstance(resolve(document, schema["$ref"]), dict), at
    if "type" in schema:
        assert schema["type"] in JSON_TYPES - {"null"}, f"{at}: {schema['type']}"
    for bound in ("exclusiveMinimum", "exclusiveMaximum", "nullable"):
        assert isinstance(schema.get(bound, False), bool), f"{at}: {bound}"
    if "$ref" in schema:
        assert set(schema) == {"$ref"}, f"{at}: siblings of $ref are ignored in 3.0"
    for name, sub in schema.get("properties", {}).items():
        check_schema(document, sub, f"{at}.{name}")
    assert set(schema.get("required", [])) <= set(schema.get("properties", {})), at
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key, [])):
            check_schema(document, sub, f"{at}.{key}[{i}]")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            check_schema(document, schema[key], f"{at}.{key}")


def check_document(document: dict[str, Any]) -> list[tuple[str, str]]:
    """Structural validation of an OpenAPI 3.0 document; returns (method, path) pairs."""
    assert document["openapi"] == "3.0.3"
    assert document["info"]["title"] and document["info"]["version"]
    for name, schema in document["components"]["schemas"].items():
        check_schema(document, schema, f"components.schemas.{name}")
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    operation_ids: set[str] = set()
    found = []
    for path, item in document["paths"].items():
        assert path.startswith("/"), path
        templated = set(re.findall(r"\{([^}]+)\}", path))
        for method, op in item.items():
            assert method in HTTP_METHODS, (path, method)
            where = f"{method.upper()} {path}"
            assert op["summary"] and op["tags"], where
            assert set(op["tags"]) <= {tag["name"] for tag in document["tags"]}, where
            assert op["operationId"] not in operation_ids, where
            operation_ids.add(op["operationId"])
            params = op.get("parameters", [])
            assert {p["name"] for p in params if p["in"] == "path"} == templated, where
            for p in params:
                assert p["in"] in ("path", "query"), where
                assert p["in"] != "path" or p["required"] is True, where
                check_schema(document, p["schema"], f"{where} {p['name']}")
            if "requestBody" in op:
                for media in op["requestBody"]["content"].values():
                    check_schema(document, media["schema"], f"{where} body")
                    assert "example" in media, f"{where}: give the body an example"
                    conforms(document, media["example"], media["schema"], f"{where} example")
            assert op["responses"], where
            assert any(s.startswith("2") for s in op["responses"]), where
            for status, response in op["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status), (where, status)
                assert response["description"], (where, status)
                for media in response.get("content", {}).values():
                    check_schema(document, media["schema"], f"{where} {status}")
                if int(status) >= 400:
                    # The one error body, shared by reference, everywhere.
                    assert response["content"] == {"application/json": {"schema": error_ref}}
            if op["security"]:
                assert "401" in op["responses"], where
                for requirement in op["security"]:
                    assert set(requirement) <= set(document["components"]["securitySchemes"])
            found.append((method, path))
    return found


# --- completeness ----------------------------------------------------------------------


def test_every_route_of_the_app_is_documented() -> None:
    app = create_app(Settings())
    assert openapi.undocumented(app.routes) == []
    paths = openapi.build(app.routes)["paths"]
    for _, route in openapi.iter_routes(app.routes):
        for method in route.methods or ():
            if method != "HEAD":
                path = re.sub(r"\{([^}:]+):[^}]+\}", r"{\1}", _full_path(app.routes, route))
                assert method.lower() in paths[path], (method, path)


def _full_path(routes: Any, target: Any) -> str:
    return next(path for path, route in openapi.iter_routes(routes) if route is target)


def test_every_api_module_is_documented_and_well_formed() -> None:
    """Including modules a component may not mount yet (the reads)."""
    modules = (auth, games, scores, admin, leaderboards, reports)
    routes = [*health.routes, Mount("/api/v1", routes=[r for m in modules for r in m.routes])]
    assert openapi.undocumented(routes) == []
    document = openapi.build(routes)
    found = check_document(document)
    assert ("get", "/api/v1/leaderboards/{game}") in found
    page = document["paths"]["/api/v1/leaderboards/{game}"]["get"]
    assert {p["name"] for p in page["parameters"]} >= {"game", "period", "limit", "cursor"}
    report = document["paths"]["/api/v1/reports/top"]["get"]["responses"]["200"]["content"]
    assert set(report) == {"application/json", "text/csv"}


def test_a_route_without_spec_is_reported() -> None:
    from starlette.responses import Response
    from starlette.routing import Route

    async def bare(request: Any) -> Response:
        return Response()

    routes = [Mount("/api/v1", routes=[Route("/bare/{x}", bare, methods=["GET", "POST"])])]
    assert openapi.undocumented(routes) == ["GET /api/v1/bare/{x}", "POST /api/v1/bare/{x}"]
    assert openapi.build(routes)["paths"] == {}


def test_schemas_come_from_the_code_types() -> None:
    document = openapi.build(create_app(Settings()).routes)
    schemas = document["components"]["schemas"]
    score_in = schemas["ScoreIn"]
    assert set(score_in["properties"]) == set(scores.ScoreIn.__struct_fields__)
    assert set(score_in["required"]) == {"game", "event_id"}
    register = document["paths"]["/api/v1/auth/register"]["post"]
    assert register["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RegisterIn"
    }
    assert set(register["responses"]) == {"201", "400", "409", "413", "422", "429", "500"}
    assert schemas["ErrorBody"]["required"] == ["error"]
    assert set(schemas["ErrorDetail"]["properties"]) == {"code", "message", "details"}


# --- the running server -----------------------------------------------------------------

# Calls that change state run in this order; everything else runs between them and
# logout, which ends the admin's token, runs last.
FIRST = [
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/games"),
    ("put", "/api/v1/games/{game}/actions/{action}"),
    ("post", "/api/v1/scores"),
]
LAST = [("post", "/api/v1/admin/users/{user_id}/void"), ("post", "/api/v1/auth/logout")]


def _order(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    middle = [call for call in found if call not in FIRST + LAST]
    return [c for c in FIRST if c in found] + middle + [c for c in LAST if c in found]


def _sample(document: dict[str, Any], schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return _sample(document, resolve(document, schema["$ref"]))
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("format") == "date":
        return datetime.now(UTC).date().isoformat()
    if schema.get("type") == "integer":
        return "1"
    for option in schema.get("anyOf", []):
        return _sample(document, option)
    return "x"


async def test_every_listed_route_answers_as_documented(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, player: Account
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        r = await http.get("/openapi.json")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        document = r.json()
        calls = _order(check_document(document))
        assert ("post", "/api/v1/scores") in calls and ("get", "/metrics") in calls

        today = datetime.now(UTC).date()
        path_values = {
            "game": "chess",  # created by the documented example of POST /games
            "action": "jump",
            "user_id": str(admin.id),  # on the board: POST /scores runs first
            "name": "docs-init.js",
        }
        query_values = {
            "ids": f"{player.id},{admin.id}",
            "start": today.isoformat(),
            "end": (today + timedelta(days=1)).isoformat(),
        }
        # The documented refresh example is a placeholder; a real token shows the 200.
        bodies = {("post", "/api/v1/auth/refresh"): {"refresh_token": admin.refresh_token}}
        # Only a device player can link a password: one signed in for the purpose.
        r = await client.post("/auth/device", json={"device_id": str(uuid.uuid4())})
        assert r.status_code == 200, r.text
        device_headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        outcomes = {}
        for method, path in calls:
            op = document["paths"][path][method]
            url = path
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    value = path_values[param["name"]]
                    if path.startswith("/static/"):
                        value = "app.js"
                    if path.endswith("/void"):
                        value = str(player.id)  # an admin cannot void itself (409)
                    url = url.replace("{" + param["name"] + "}", value)
            query = {
                p["name"]: query_values.get(p["name"]) or _sample(document, p["schema"])
                for p in op.get("parameters", [])
                if p["in"] == "query" and p["required"]
            }
            body = bodies.get((method, path))
            if body is None and "requestBody" in op:
                body = op["requestBody"]["content"]["application/json"]["example"]
            if (method, path) == ("post", "/api/v1/scores"):
                body = {**body, "event_id": str(uuid.uuid4())}
            headers = admin.headers if op["security"] else {}
            if (method, path) == ("post", "/api/v1/auth/link"):
                headers = device_headers
            r = await http.request(method, url, params=query, json=body, headers=headers)
            where = f"{method.upper()} {url} -> {r.status_code} {r.text[:200]}"
            assert str(r.status_code) in op["responses"], where
            assert r.status_code < 500, where
            response = op["responses"][str(r.status_code)]
            media_type = r.headers.get("content-type", "").split(";")[0]
            if "content" in response:
                # "*/*" documents a file route whose type depends on the file.
                assert media_type in response["content"] or "*/*" in response["content"], where
                if media_type == "application/json":
                    conforms(document, r.json(), response["content"][media_type]["schema"])
            else:
                assert r.content == b"", where
            outcomes[(method, path)] = r.status_code
        # Every call was meant to succeed: a documented error is still a failure here.
        failed = {call: status for call, status in outcomes.items() if status >= 300}
        assert failed == {}


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name):
                self.urls.append(found[name] or "")
        if tag == "script":
            self._in_script = True
            if not found.get("src"):
                self.inline_scripts += 1
        assert not any(name.startswith("on") for name in found), f"inline handler in <{tag}>"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        assert not (self._in_script and data.strip()), "inline script body"


async def test_docs_page_uses_only_same_origin_assets(server: RunningApp) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        r = await http.get("/docs")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "'unsafe-inline'" not in r.headers["content-security-policy"]
        page = _Assets()
        page.feed(r.text)
        assert page.inline_scripts == 0
        assert "/docs/static/swagger-ui-bundle.js" in page.urls
        assert "/docs/static/docs-init.js" in page.urls
        for url in page.urls:
            # Same origin: a path on this host, never a scheme or a protocol-relative URL.
            assert url.startswith("/") and not url.startswith("//"), url
            asset = await http.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 0, url
        init = (await http.get("/docs/static/docs-init.js")).text
        assert '"/openapi.json"' in init and "validatorUrl: null" in init
        bundle = await http.get("/docs/static/swagger-ui-bundle.js")
        assert bundle.headers["content-type"].startswith("text/javascript")
        missing = await http.get("/docs/static/..%2Fdocs.py")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium")
async def test_docs_page_renders_under_the_csp(server: RunningApp, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    async with playwright.async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await chromium.new_page()
            problems: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("request", lambda req: requests.append(req.url))
            await page.goto(server.url + "/docs")
            # Swagger UI drew the operations from /openapi.json.
            await page.locator("#operations-auth-register").wait_for(timeout=10_000)
            assert await page.locator(".opblock").count() >= 15
            await page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
        finally:
            await chromium.close()
    assert problems == [], problems  # a CSP violation is reported as a console error
    assert all(url.startswith(server.url + "/") for url in requests), requests


# --- the document states every limit the server enforces --------------------------------


def _params(document: dict[str, Any], method: str, path: str) -> dict[str, dict[str, Any]]:
    op = document["paths"][path][method]
    return {p["name"]: p["schema"] for p in op.get("parameters", [])}


def _schema(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = resolve(document, node["$ref"])
    return node


def test_the_document_states_the_limits() -> None:
    from podium.validation import INT64_MAX, MAX_ABS_SCORE

    document = openapi.build(create_app(Settings()).routes)
    page = _params(document, "get", "/api/v1/leaderboards/{game}")
    assert (page["limit"]["minimum"], page["limit"]["maximum"]) == (1, 200)
    assert page["offset"]["minimum"] == 0 and "maximum" in page["offset"]
    assert page["period"]["enum"] == sorted(["all", "day", "week", "month"])
    assert page["ranking"]["enum"] == ["competition", "ordinal"]
    assert page["cursor"]["maxLength"] > 0
    assert page["game"]["pattern"] and page["game"]["maxLength"] == 40
    around = _params(document, "get", "/api/v1/leaderboards/{game}/around/{user_id}")
    assert (around["radius"]["minimum"], around["radius"]["maximum"]) == (0, 50)
    assert around["user_id"] == {"type": "integer", "minimum": 1, "maximum": INT64_MAX}
    members = _params(document, "get", "/api/v1/leaderboards/{game}/members")
    assert "{0,99}" in members["ids"]["pattern"]
    void = _params(document, "post", "/api/v1/admin/users/{user_id}/void")
    assert void["user_id"]["maximum"] == INT64_MAX
    action = _params(document, "put", "/api/v1/games/{game}/actions/{action}")["action"]
    assert action["pattern"] and action["maxLength"] == 64

    schemas = document["components"]["schemas"]
    game_in = schemas["GameIn"]["properties"]
    assert game_in["id"]["pattern"] and game_in["id"]["not"]["enum"] == ["global"]
    assert game_in["name"]["maxLength"] == 100 and game_in["name"]["pattern"]
    assert game_in["delta_window_s"]["minimum"] == 1
    key = next(o for o in game_in["hmac_key"].get("anyOf", [game_in["hmac_key"]]) if o)
    assert (key["minLength"], key["maxLength"]) == (16, 256)
    assert game_in["min_score"]["maximum"] == MAX_ABS_SCORE
    assert schemas["PointsIn"]["properties"]["points"]["maximum"] == MAX_ABS_SCORE
    patch = schemas["GamePatch"]["properties"]
    assert patch["name"]["pattern"] and patch["delta_window_s"]["maximum"] == 86_400 * 31


def test_every_parameter_and_body_field_is_bounded() -> None:
    """No string without a length bound or an enum, no integer without both bounds."""
    document = openapi.build(create_app(Settings()).routes)
    loose: list[str] = []

    def check(node: dict[str, Any], at: str) -> None:
        node = _schema(document, node)
        for key in ("anyOf", "oneOf", "allOf"):
            for i, option in enumerate(node.get(key, [])):
                if "properties" in node and set(option) <= {"required", "properties"}:
                    continue  # which of the object's own (bounded) fields are given
                check(option, f"{at}.{key}[{i}]")
        if node.get("type") == "string" and "enum" not in node and "format" not in node:
            if "maxLength" not in node:
                loose.append(f"{at}: string without maxLength")
        if node.get("type") == "integer" and not {"minimum", "maximum"} <= set(node):
            loose.append(f"{at}: integer without both bounds")
        for name, prop in node.get("properties", {}).items():
            check(prop, f"{at}.{name}")
        if isinstance(node.get("items"), dict):
            check(node["items"], f"{at}[]")
            if "maxItems" not in node:
                loose.append(f"{at}: array without maxItems")

    for path, item in document["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, op in item.items():
            for p in op.get("parameters", []):
                check(p["schema"], f"{method.upper()} {path} {p['name']}")
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                check(schema, f"{method.upper()} {path} body")
    assert not loose, "\n".join(loose)
