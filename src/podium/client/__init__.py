"""Podium's Python client: `Client` (blocking) and `AsyncClient`.

    async with AsyncClient("http://127.0.0.1:8000", service_token="psk_...") as podium:
        await podium.submit("chess", 1200, user_id=7)
        async for change in podium.scoreboard("chess"):
            print(change.kind, change.entries)

Needs only httpx, msgspec and websockets (and Podium's wire modules `podium.protocol`,
`podium.validation`, `podium.errors`), not the server's dependencies.
"""

from podium.client.backoff import Backoff
from podium.client.core import AsyncClient
from podium.client.errors import (
    ApiError,
    AuthError,
    PodiumError,
    ProtocolError,
    SubscriptionClosed,
    Unavailable,
)
from podium.client.live import BoardUpdate, Subscription
from podium.client.sync import Client, SyncSubscription
from podium.client.types import (
    Entry,
    Game,
    MemberRank,
    MembersPage,
    Page,
    Report,
    ReportRow,
    ScoreOut,
    TokenPair,
    User,
    UserBoards,
    UserRank,
)
from podium.protocol import PageMsg, RankMsg, Row

__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthError",
    "Backoff",
    "BoardUpdate",
    "Client",
    "Entry",
    "Game",
    "MemberRank",
    "MembersPage",
    "Page",
    "PageMsg",
    "PodiumError",
    "ProtocolError",
    "RankMsg",
    "Report",
    "ReportRow",
    "Row",
    "ScoreOut",
    "Subscription",
    "SubscriptionClosed",
    "SyncSubscription",
    "TokenPair",
    "Unavailable",
    "User",
    "UserBoards",
    "UserRank",
]
