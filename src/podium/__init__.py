"""Podium: a realtime leaderboard server."""

__version__ = "0.1.0"
