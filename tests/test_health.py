import os

import httpx

from tests.conftest import RunningApp


async def test_healthz_and_readyz(server: RunningApp) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/healthz")
        assert r.status_code == 200
        # Which process answered: its id (also in the header) and pid; no worker index
        # outside `serve --workers`.
        assert r.json() == {
            "status": "ok",
            "instance": r.headers["x-podium-instance"],
            "pid": os.getpid(),
            "worker": None,
        }
        r = await http.get("/readyz")
        assert r.status_code == 200
        assert r.json()["checks"] == {"redis": "ok", "postgres": "ok"}
