"""The one clock of a running Podium: what "now" and "today" are for writes and boards.

Writes stamp their time with it, reads and the hub pick the current period with it, so
a test that moves it moves all of them together.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime


class Clock:
    """UTC wall time, or the moments of a source a test sets with `set`."""

    def __init__(self, source: Callable[[], datetime] | None = None) -> None:
        self._source = source

    def set(self, source: Callable[[], datetime] | None) -> None:
        """Read time from `source` (aware datetimes) from now on; None: the real clock."""
        self._source = source

    def now(self) -> datetime:
        """An aware datetime in UTC."""
        if self._source is None:
            return datetime.now(UTC)
        return self._source().astimezone(UTC)

    def today(self) -> date:
        """The UTC day of `now()`."""
        return self.now().date()
