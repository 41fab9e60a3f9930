"""/metrics: the Prometheus text format, every metric Podium exports, counters that move."""

from __future__ import annotations

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Account, RunningApp

METRIC_NAMES = {
    "podium_http_requests",
    "podium_ws_open_sockets",
    "podium_ws_subscriptions",
    "podium_ws_pushes_sent",
    "podium_ws_pushes_coalesced",
    "podium_ws_slow_drops",
    "podium_ws_slow_closes",
    "podium_pubsub_lag_seconds",
    "podium_writes",
    "podium_write_ack_seconds",
    "podium_write_batch_size",
    "podium_live_pages",
    "podium_redis_errors",
    "podium_postgres_errors",
}


async def scrape(http: httpx.AsyncClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels: value}."""
    r = await http.get("/metrics")
    assert r.status_code == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def requests_of(samples: dict, method: str, route: str, status: str) -> float:
    key = (("method", method), ("route", route), ("status", status))
    return samples.get("podium_http_requests_total", {}).get(key, 0.0)


async def test_metrics_exposition_lists_every_metric(server: RunningApp) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        r = await http.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"] == CONTENT_TYPE_LATEST
        assert r.headers["content-type"].startswith("text/plain; version=")
        families = {family.name for family in text_string_to_metric_families(r.text)}
        assert families >= METRIC_NAMES
        samples = await scrape(http)
    # Labelled series exist from the start, at zero, for dashboards.
    writes = samples["podium_writes_total"]
    assert {dict(k)["outcome"] for k in writes} >= {"accepted", "duplicate", "refused"}
    sockets = samples["podium_ws_open_sockets"]
    assert {dict(k)["endpoint"] for k in sockets} >= {"scoreboard", "my-score", "add-score"}
    buckets = {dict(k)["le"] for k in samples["podium_write_ack_seconds_bucket"]}
    assert {"0.0005", "1.0", "+Inf"} <= buckets


async def test_http_requests_are_counted_by_route_template(
    server: RunningApp, player: Account
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        before = await scrape(http)
        for _ in range(3):
            assert (await http.get("/api/v1/auth/me")).status_code == 401
        assert (await http.get("/api/v1/auth/me", headers=player.headers)).status_code == 200
        r = await http.get("/api/v1/games/no-such-game", headers=player.headers)
        assert r.status_code == 404
        assert (await http.get("/api/v1/no/such/route")).status_code == 404
        assert (await http.get("/nowhere")).status_code == 404
        after = await scrape(http)

    def moved(method: str, route: str, status: str) -> float:
        return requests_of(after, method, route, status) - requests_of(
            before, method, route, status
        )

    # Other tests may share this process's registry; only this test's own calls count.
    assert moved("GET", "/api/v1/auth/me", "401") == 3
    assert moved("GET", "/api/v1/auth/me", "200") == 1
    # The template, not the raw path: one series per route, not per id.
    assert moved("GET", "/api/v1/games/{game}", "404") == 1
    assert moved("GET", "unmatched", "404") == 2
    routes = {dict(k)["route"] for k in after["podium_http_requests_total"]}
    assert not any("no-such-game" in route or "nowhere" in route for route in routes)


async def test_score_writes_move_the_write_metrics(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    from tests.boards_helpers import create_game, post_score

    async with httpx.AsyncClient(base_url=server.url) as root:
        before = await scrape(root)
        game = (await create_game(client, admin))["id"]
        await post_score(client, admin, game, 10)
        r = await client.post(
            "/scores",
            json={"game": game, "event_id": "not-a-uuid", "score": 1},
            headers=admin.headers,
        )
        assert r.status_code == 422
        after = await scrape(root)

    def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get(name, {}).get(labels, 0.0) - before.get(name, {}).get(labels, 0.0)

    assert moved("podium_writes_total", (("outcome", "accepted"),)) == 1
    assert moved("podium_writes_total", (("outcome", "refused"),)) == 1
    assert moved("podium_write_ack_seconds_count") == 1
    assert moved("podium_write_batch_size_count") >= 1


async def test_live_pushes_move_the_realtime_metrics(
    server: RunningApp, client: httpx.AsyncClient, admin: Account
) -> None:
    from tests.boards_helpers import create_game, post_score
    from tests.ws_helpers import open_ws, recv_until

    game = (await create_game(client, admin))["id"]
    async with httpx.AsyncClient(base_url=server.url) as root:
        before = await scrape(root)
        ws = await open_ws(server, "scoreboard", admin, game=game)
        await recv_until(ws, lambda m: m["type"] == "snapshot")
        during = await scrape(root)
        await post_score(client, admin, game, 42)
        await recv_until(ws, lambda m: m["type"] == "diff")
        await ws.close()
        after = await scrape(root)

    def value(samples: dict, name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return samples.get(name, {}).get(labels, 0.0)

    board = (("endpoint", "scoreboard"),)
    assert (
        value(during, "podium_ws_open_sockets", board)
        == value(before, "podium_ws_open_sockets", board) + 1
    )
    assert value(during, "podium_ws_subscriptions", board) >= 1
    assert value(after, "podium_ws_pushes_sent_total") > value(
        before, "podium_ws_pushes_sent_total"
    )
    assert value(after, "podium_pubsub_lag_seconds_count") > value(
        before, "podium_pubsub_lag_seconds_count"
    )
