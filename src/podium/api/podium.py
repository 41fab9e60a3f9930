"""The running app's objects, typed, as handlers reach them: `podium_of(request)`."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from podium.boards.runtime import Boards
from podium.realtime.runtime import Realtime
from podium.services import Services


class Podium:
    """Ground services and the domain containers built on them (by app.py's lifespan)."""

    def __init__(self, services: Services, boards: Boards, realtime: Realtime) -> None:
        self.services = services
        self.boards = boards
        self.realtime = realtime


def podium_of(conn: HTTPConnection) -> Podium:
    """What the lifespan put at `app.state.podium`."""
    podium: Podium = conn.app.state.podium
    return podium
