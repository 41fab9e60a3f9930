"""The JS client as an npm package (clients/js): one module for the served page and for a
game's bundler, declarations that `tsc` holds it to, and a bundled game in Chromium.

Node and npm are needed for the type checks and the bundle; without them these tests
skip, except in CI (CI=true), where .ci/run installs them and a skip would hide a gap.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium import protocol
from podium.embedded import free_port
from podium.web import page
from tests.conftest import RunningApp, Stores, app_with, make_admin, register_and_login

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clients" / "js"
MODULE = PACKAGE / "podium.js"
DECLARATIONS = PACKAGE / "podium.d.ts"
CHROMIUM = Path("/usr/bin/chromium")


def _need_node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return node, npm
    if os.environ.get("CI") == "true":
        pytest.fail("CI needs node and npm for the JS package checks (.ci/run installs them)")
    pytest.skip("no node/npm on this machine (apt-get install nodejs npm)")


@pytest.fixture(scope="module")
def node() -> str:
    """Node, with the package's pinned dev tools installed (`npm ci` once if missing)."""
    node, npm = _need_node()
    tools = PACKAGE / "node_modules"
    if not ((tools / "typescript").is_dir() and (tools / "esbuild").is_dir()):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True, timeout=300)
    return node


def tsc(node: str, project: Path) -> subprocess.CompletedProcess[str]:
    tool = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
    return subprocess.run(
        [node, str(tool), "--noEmit", "-p", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def package_json() -> dict[str, Any]:
    return json.loads((PACKAGE / "package.json").read_text())


# --- one source, one version --------------------------------------------------------


def test_package_describes_the_module_and_its_types() -> None:
    pkg = package_json()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pkg["name"] == "@podium/client"
    assert pkg["version"] == project["project"]["version"], "the client ships with its server"
    assert pkg["type"] == "module" and pkg["license"]
    assert pkg["exports"]["."] == {"types": "./podium.d.ts", "default": "./podium.js"}
    assert pkg["types"] == "./podium.d.ts"
    assert set(pkg["files"]) == {"podium.js", "podium.d.ts", "README.md"}
    for name in pkg["files"]:
        assert (PACKAGE / name).is_file(), name
    # The lock pins the tools `npm ci` installs, and names the same package and version.
    lock = json.loads((PACKAGE / "package-lock.json").read_text())
    assert (lock["name"], lock["version"]) == (pkg["name"], pkg["version"])
    for tool in ("typescript", "esbuild"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", pkg["devDependencies"][tool]), "pinned exactly"
        assert lock["packages"][f"node_modules/{tool}"]["version"] == pkg["devDependencies"][tool]


def test_the_page_serves_the_package_module_itself(tmp_path: Path) -> None:
    # One file, no copy: a checkout serves clients/js/podium.js, and nothing else of that
    # name lives beside the page to drift from it.
    assert page.client_module_path() == MODULE
    assert not (page.WEB_DIR / "podium.js").exists()
    assert page.ASSETS["podium.js"].body == MODULE.read_bytes()
    assert 'from "./podium.js"' in (page.WEB_DIR / "app.js").read_text()
    # A wheel (and so the image) carries the same file where page.py looks for it.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include == {"clients/js/podium.js": "podium/web/podium.js"}
    assert page.CLIENT_SOURCES[-1] == page.WEB_DIR / "podium.js"
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "COPY clients/js/podium.js ./clients/js/podium.js" in dockerfile


def test_the_wheel_carries_the_package_module(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("no uv on PATH to build the wheel with")
    subprocess.run(
        [uv, "build", "--wheel", "--quiet", "--out-dir", str(tmp_path), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("podium-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("podium/web/podium.js") == MODULE.read_bytes()


async def test_served_module_is_byte_for_byte_the_package_file(server: RunningApp) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        r = await http.get("/static/podium.js")
    assert r.status_code == 200
    assert r.content == MODULE.read_bytes()


# --- declarations ----------------------------------------------------------------------


def test_every_export_is_declared_and_every_declaration_exported(node: str) -> None:
    script = "import(process.argv[1]).then((m) => console.log(JSON.stringify(Object.keys(m))))"
    out = subprocess.run(
        [node, "--input-type=module", "-e", script, MODULE.as_uri()],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    exported = set(json.loads(out.stdout))
    pattern = r"^export declare (?:class|function|const) (\w+)"
    declared = set(re.findall(pattern, DECLARATIONS.read_text(), re.M))
    assert exported == declared
    assert {"Podium", "PodiumSession", "PodiumError", "BoardState", "LiveSocket"} <= exported


def declared_interfaces() -> dict[str, set[str]]:
    """Each interface of podium.d.ts and its field names (inherited ones included)."""
    text = DECLARATIONS.read_text()
    found: dict[str, tuple[str | None, set[str]]] = {}
    for name, base, body in re.findall(
        r"^export interface (\w+)(?: extends (\w+))? \{\n(.*?)^\}", text, re.M | re.S
    ):
        found[name] = (base or None, set(re.findall(r"^  (\w+)\??:", body, re.M)))

    def fields(name: str) -> set[str]:
        base, own = found[name]
        return own | (fields(base) if base in found else set())

    return {name: fields(name) for name in found}


def declared_union(name: str) -> list[str]:
    match = re.search(
        rf"^export type {name} =\n((?:  \| \w+\n?)+);", DECLARATIONS.read_text(), re.M
    )
    assert match, name
    return re.findall(r"\| (\w+)", match.group(1))


@pytest.mark.parametrize(
    ("union", "structs"),
    [("ServerMessage", protocol.ServerMessage), ("ClientMessage", protocol.ClientMessage)],
)
def test_every_wire_message_is_declared_with_its_fields(union: str, structs: Any) -> None:
    # protocol.py is the schema: a message or a field added there and not here fails.
    interfaces = declared_interfaces()
    by_tag = {}
    for name in declared_union(union):
        (tag,) = re.findall(r'^  type: "(\w+)";', _interface_text(name), re.M)
        by_tag[tag] = interfaces[name] - {"type"}
    expected = {cls.__struct_config__.tag: set(cls.__struct_fields__) for cls in structs.__args__}
    assert by_tag == expected


def _interface_text(name: str) -> str:
    match = re.search(rf"^export interface {name}\b.*?^\}}", DECLARATIONS.read_text(), re.M | re.S)
    assert match, name
    return match.group(0)


def test_tsc_accepts_the_module_and_the_typed_usage(node: str) -> None:
    result = tsc(node, PACKAGE)
    assert result.returncode == 0, result.stdout + result.stderr


# A game's own file, compiled against the installed package. Each mistake must fail tsc.
GOOD_USAGE = """\
import { Podium, type ServerMessage } from "@podium/client";

const client = new Podium({ baseUrl: "http://127.0.0.1:8000", token: "psk_x" });
const board = client.scoreboard("chess", "week", {
  onDiff: (entries, msg) => console.log(entries[0]?.user_id, msg.prev_seq),
});
export async function main(): Promise<number | null> {
  const result = await client.submit({ game: "chess", score: 10 });
  board.close();
  return result.rank;
}
export function kind(msg: ServerMessage): string {
  return msg.type === "rank" ? String(msg.rank) : msg.type;
}
"""

MISTAKES = {
    "a period the server does not have": (
        'client.scoreboard("chess", "week"',
        'client.scoreboard("chess", "year"',
        "TS2345",
    ),
    "a rank is a number or null, not a string": (
        "Promise<number | null>",
        "Promise<string>",
        "TS2322",
    ),
    "a diff carries upserts, not entries": (
        "msg.prev_seq",
        "msg.entries",
        "TS2339",
    ),
    "a submit needs its game": (
        '{ game: "chess", score: 10 }',
        "{ score: 10 }",
        "TS2741",
    ),
}


def game_project(tmp_path: Path, source: str) -> Path:
    """A game's project that depends on the package as `npm install <path>` would."""
    (tmp_path / "node_modules" / "@podium").mkdir(parents=True)
    (tmp_path / "node_modules" / "@podium" / "client").symlink_to(PACKAGE)
    (tmp_path / "game.ts").write_text(source)
    config = {
        "compilerOptions": {
            "target": "es2022",
            "lib": ["es2022", "dom"],
            "module": "esnext",
            "moduleResolution": "bundler",
            "strict": True,
            "noEmit": True,
            "types": [],
        },
        "files": ["game.ts"],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    return tmp_path


def test_a_games_typed_usage_compiles(node: str, tmp_path: Path) -> None:
    result = tsc(node, game_project(tmp_path, GOOD_USAGE))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_type_error_in_a_games_usage_fails_tsc(node: str, tmp_path: Path, mistake: str) -> None:
    good, bad, code = MISTAKES[mistake]
    assert good in GOOD_USAGE
    result = tsc(node, game_project(tmp_path, GOOD_USAGE.replace(good, bad, 1)))
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"tsc accepted {mistake}"
    assert "game.ts" in output and code in output, output


# A declaration changed so that podium.js no longer keeps it: the package check must fail.
UNKEPT = {
    "a function's parameter type": ("backoff(attempt: number,", "backoff(attempt: string,"),
    "a method the class lacks": (
        "  /** Close every socket",
        "  pause(): void;\n  /** Close every socket",
    ),
    "an option the constructor ignores": (
        "  baseUrl?: string;\n  /** Null",
        "  baseUrl: number;\n  /** Null",
    ),
}


@pytest.mark.parametrize("change", sorted(UNKEPT))
def test_a_declaration_the_module_does_not_keep_fails_tsc(
    node: str, tmp_path: Path, change: str
) -> None:
    copy = tmp_path / "js"
    (copy / "test").mkdir(parents=True)
    for name in ("podium.js", "package.json", "tsconfig.json"):
        shutil.copy(PACKAGE / name, copy / name)
    (copy / "test" / "usage.ts").write_text('import "@podium/client";\n')
    (copy / "node_modules").symlink_to(PACKAGE / "node_modules")
    before, after = UNKEPT[change]
    declared = DECLARATIONS.read_text()
    assert declared.count(before) == 1, before
    (copy / "podium.d.ts").write_text(declared.replace(before, after))
    result = tsc(node, copy)
    assert result.returncode != 0 and "podium.js(" in result.stdout, result.stdout


# --- a bundled game in Chromium --------------------------------------------------------

GAME_ENTRY = """\
import { Podium } from "@podium/client";

const params = new URLSearchParams(location.hash.slice(1));
const game = params.get("game");
const client = new Podium({ baseUrl: params.get("server"), token: params.get("token") });
window.podiumEvents = [];
client.scoreboard(game, "all", {
  onSnapshot: (entries, msg) => podiumEvents.push({ kind: "snapshot", seq: msg.seq, entries }),
  onDiff: (entries, msg) => podiumEvents.push({ kind: "diff", seq: msg.seq, entries }),
  onStatus: (status) => podiumEvents.push({ kind: "status", status: status.status }),
});
window.submitScore = (score) => client.submit({ game, score });
"""

GAME_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>game</title><link rel="icon" href="data:,">
<script type="module" src="game.js"></script></head><body></body></html>
"""


def bundle_game(node: str, tmp_path: Path) -> Path:
    """The game's web build: esbuild bundles the package into the game's one script."""
    project = tmp_path / "game"
    (project / "src").mkdir(parents=True)
    (project / "node_modules" / "@podium").mkdir(parents=True)
    (project / "node_modules" / "@podium" / "client").symlink_to(PACKAGE)
    (project / "src" / "main.js").write_text(GAME_ENTRY)
    dist = project / "dist"
    # esbuild's JS API (its bin/ may be the native binary or a wrapper, by platform).
    build = (
        "require(process.argv[1]).build({entryPoints: ['src/main.js'], bundle: true,"
        " format: 'esm', outfile: 'dist/game.js', logLevel: 'error'})"
        ".catch(() => process.exit(1))"
    )
    subprocess.run(
        [node, "-e", build, str(PACKAGE / "node_modules" / "esbuild")],
        cwd=project,
        check=True,
        timeout=120,
    )
    bundled = (dist / "game.js").read_text()
    # Inlined (no import left) and tree-shaken (the unused session class is dropped).
    assert "@podium/client" not in bundled and "PodiumSession" not in bundled
    assert re.search(r"\bclass Podium\b|\bPodium = class\b", bundled), bundled[:500]
    (dist / "index.html").write_text(GAME_PAGE)
    return dist


@contextlib.contextmanager
def static_site(directory: Path, port: int) -> Iterator[str]:
    """The game's own origin: its files on a loopback port of their own."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium")
async def test_a_bundled_game_on_its_own_origin_gets_live_pushes(
    node: str, stores: Stores, tmp_path: Path
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    dist = bundle_game(node, tmp_path)
    game_port = free_port()
    game_origin = f"http://127.0.0.1:{game_port}"
    game = f"g{uuid.uuid4().hex[:8]}"
    with static_site(dist, game_port):
        # The game runs on its own origin: the server lets it in through CORS_ORIGINS.
        async with app_with(stores, cors_origins=(game_origin,)) as app:
            async with httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=10) as http:
                admin = await make_admin(app, http)
                body = {"id": game, "name": "Bundle", "order": "desc", "operator": "best"}
                body["policy"] = "client"
                r = await http.post("/games", json=body, headers=admin.headers)
                assert r.status_code == 201, r.text
                rival, player = await register_and_login(http), await register_and_login(http)
                r = await http.post(
                    "/scores",
                    json={"game": game, "event_id": str(uuid.uuid4()), "score": 300},
                    headers=rival.headers,
                )
                assert r.status_code == 200, r.text
                await _play_in_chromium(playwright_api, app, http, game, game_origin, rival, player)


async def _play_in_chromium(
    pw_api: Any,
    app: RunningApp,
    http: httpx.AsyncClient,
    game: str,
    origin: str,
    rival: Any,
    player: Any,
) -> None:
    async with pw_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
        )
        try:
            tab = await browser.new_page()
            problems: list[str] = []
            tab.on("pageerror", lambda exc: problems.append(str(exc)))
            tab.on("console", lambda m: m.type == "error" and problems.append(m.text))
            fragment = f"server={app.url}&token={player.access_token}&game={game}"
            await tab.goto(f"{origin}/#{fragment}")
            snapshot = await _wait_event(tab, "e => e.kind === 'snapshot'")
            assert [(e["user_id"], e["score"]) for e in snapshot["entries"]] == [(rival.id, 300)]

            # The game submits through the bundled client (a cross-origin POST) ...
            result = await tab.evaluate("score => submitScore(score)", 500)
            assert (result["user_id"], result["rank"], result["duplicate"]) == (player.id, 1, False)
            diff = await _wait_event(
                tab, f"e => e.kind === 'diff' && e.entries[0]?.user_id === {player.id}"
            )
            assert [(e["user_id"], e["rank"]) for e in diff["entries"]] == [
                (player.id, 1),
                (rival.id, 2),
            ]
            # ... and another player's write, from elsewhere, is pushed to it too.
            r = await http.post(
                "/scores",
                json={"game": game, "event_id": str(uuid.uuid4()), "score": 900},
                headers=rival.headers,
            )
            assert r.status_code == 200, r.text
            diff = await _wait_event(
                tab, f"e => e.kind === 'diff' && e.entries[0]?.user_id === {rival.id}"
            )
            assert diff["entries"][0]["score"] == 900 and diff["seq"] > snapshot["seq"]
            assert problems == []
        finally:
            await browser.close()


async def _wait_event(tab: Any, predicate: str, timeout: float = 10_000) -> dict[str, Any]:
    """The first event the page's client recorded that matches, waiting for it to come."""
    handle = await tab.wait_for_function(
        f"() => window.podiumEvents?.find({predicate})", timeout=timeout
    )
    event: dict[str, Any] = await handle.json_value()
    return event
