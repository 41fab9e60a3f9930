"""Every Prometheus metric Podium exports, in one registry that all layers import.

Who updates what (import the object from here, never create metrics elsewhere):

- http (`api/middleware.py`): `HTTP_REQUESTS` once per request, labelled by the
  route template (never the raw path: the label set must stay small).
- realtime hub/session: `WS_OPEN_SOCKETS` (inc on accept, dec in teardown) and
  `WS_SUBSCRIPTIONS` (inc on subscribe, dec on unsubscribe/teardown), both by endpoint
  (`scoreboard`, `scores`, `my-score`, `add-score`, `reports`); `PUSHES_SENT` per frame
  written to a socket; `PUSHES_COALESCED` per board change folded into a later push
  of the same tick; `SLOW_DROPS` per push dropped for a full send queue (the client
  gets a snapshot when it drains); `SLOW_CLOSES` per socket closed with the "slow"
  code; `PUBSUB_LAG` with (local push time minus publish time) for each board change.
- reads (`boards/ranks.py`): `LIVE_PAGES` per top page served from a hub's window.
- write path (writer, scores): `WRITES` by outcome (`accepted`, `duplicate`,
  `refused`); `WRITE_ACK_SECONDS` from a write's arrival at the writer to its commit
  acknowledgement; `BATCH_SIZE` per committed group-commit batch.
- stores: `REDIS_ERRORS` / `POSTGRES_ERRORS` whenever a call to the store fails
  (connection refused, timeout, server error) and the code handles it.

The registry is per process, not per app: several apps in one process (tests) share
it, which is what a scrape of that process should see anyway.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

# 0.5 ms to 1 s: a group commit is a few ms; a second means something is wrong.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Pub/sub lag includes the coalescing tick (50 ms by default), hence the upper range.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

HTTP_REQUESTS = Counter(
    "podium_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
WS_OPEN_SOCKETS = Gauge(
    "podium_ws_open_sockets",
    "WebSocket connections open on this instance, by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
WS_SUBSCRIPTIONS = Gauge(
    "podium_ws_subscriptions",
    "Live board subscriptions held by this instance's sockets, by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)
PUSHES_SENT = Counter(
    "podium_ws_pushes_sent",
    "Push frames written to sockets.",
    registry=REGISTRY,
)
PUSHES_COALESCED = Counter(
    "podium_ws_pushes_coalesced",
    "Board changes folded into a later push of the same tick instead of sent alone.",
    registry=REGISTRY,
)
SLOW_DROPS = Counter(
    "podium_ws_slow_drops",
    "Pushes dropped because a socket's send queue was full (a snapshot follows).",
    registry=REGISTRY,
)
SLOW_CLOSES = Counter(
    "podium_ws_slow_closes",
    "Sockets closed with the 'slow' close code.",
    registry=REGISTRY,
)
PUBSUB_LAG = Histogram(
    "podium_pubsub_lag_seconds",
    "Time from a board change's PUBLISH to its push on this instance's sockets.",
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)
WRITES = Counter(
    "podium_writes",
    "Score writes, by outcome: accepted, duplicate (same event_id replayed), refused.",
    ["outcome"],
    registry=REGISTRY,
)
WRITE_ACK_SECONDS = Histogram(
    "podium_write_ack_seconds",
    "Time from a write reaching the writer to its durable acknowledgement.",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "podium_write_batch_size",
    "Writes per group-commit transaction.",
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)
LIVE_PAGES = Counter(
    "podium_live_pages",
    "Top pages served from the hub's in-memory window of a watched board (no Redis call).",
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "podium_redis_errors",
    "Failed Redis calls that the code handled (fallback, retry or 503).",
    registry=REGISTRY,
)
POSTGRES_ERRORS = Counter(
    "podium_postgres_errors",
    "Failed PostgreSQL calls that the code handled (503 or retry).",
    registry=REGISTRY,
)

WRITE_OUTCOMES = ("accepted", "duplicate", "refused")
WS_ENDPOINTS = ("scoreboard", "scores", "my-score", "add-score", "reports")

# Labelled series appear in a scrape only once touched; start them at zero so a
# dashboard sees every endpoint and outcome from the first scrape.
for _outcome in WRITE_OUTCOMES:
    WRITES.labels(_outcome)
for _endpoint in WS_ENDPOINTS:
    WS_OPEN_SOCKETS.labels(_endpoint)
    WS_SUBSCRIPTIONS.labels(_endpoint)


def exposition() -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
