"""Schemathesis over every operation of /openapi.json against a real running server.

Every check runs (schemathesis.toml: 500s, response schema, status codes, content
types, headers, negative data rejected, positive data accepted, Allow, auth), once with
an admin's token and once with a player's. Logout is left out so the tokens survive;
the void runs last and alone because it may void the admin itself. CI runs a few
examples per operation; PODIUM_FUZZ_EXAMPLES=500 runs a long pass.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx

from tests.boards_helpers import post_score
from tests.conftest import (
    Account,
    Stores,
    drop_test_state,
    make_admin,
    make_settings,
    register_and_login,
    running_app,
)

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
EXAMPLES = int(os.environ.get("PODIUM_FUZZ_EXAMPLES", "8"))


async def _schemathesis(url: str, token: str, *selection: str) -> None:
    args = [
        *("-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"), "run"),
        f"{url}/openapi.json",
        *("-H", f"Authorization: Bearer {token}"),
        *("--max-examples", str(EXAMPLES), "--seed", "9"),
        *("--phases", "examples,coverage,fuzzing", "--request-timeout", "20"),
        *("--no-color", "--suppress-health-check", "all"),
        *selection,
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.hostile.fuzz_hooks", "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-12_000:]
    assert "Tested:" in text, text[-4_000:]


async def test_the_documented_api_survives_schemathesis(stores: Stores) -> None:
    settings = make_settings(
        stores,
        registrations_per_minute=100_000,
        login_attempts_per_minute=100_000,
        writes_per_second_per_user=100_000,
        writes_per_second_per_ip=100_000,
    )
    async with running_app(settings) as app:
        async with httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=20) as http:
            admin = await make_admin(app, http)
            player: Account = await register_and_login(http)
            # Something for the reads to find: the documented example game, with a score.
            game = {"id": "chess", "name": "Chess"}
            r = await http.post("/games", json=game, headers=admin.headers)
            assert r.status_code == 201, r.text
            await post_score(http, player, "chess", 10)
            await http.put("/games/chess/actions/jump", json={"points": 5}, headers=admin.headers)
            rest = ("--exclude-operation-id", "logout", "--exclude-operation-id", "void")
            await _schemathesis(app.url, admin.access_token, *rest)
            await _schemathesis(app.url, player.access_token, *rest)
            await _schemathesis(app.url, admin.access_token, "--include-operation-id", "void")
            assert (await http.get(app.url + "/readyz")).status_code == 200
            # An honest newcomer is still served (the void run may have voided the others).
            newcomer = await register_and_login(http)
            r = await http.get("/leaderboards/chess", headers=newcomer.headers)
            assert r.status_code == 200, r.text
    await drop_test_state(settings)
