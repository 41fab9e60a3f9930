"""Helpers for the WebSocket tests: connect with each auth way, read JSON with timeouts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import Account, RunningApp


def ws_url(server: RunningApp, path: str, **params: object) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{server.ws_url}/ws/v1/{path}" + (f"?{query}" if query else "")


async def open_ws(
    server: RunningApp,
    path: str,
    who: Account | str | None,
    how: str = "header",
    *,
    headers: dict[str, str] | None = None,
    **params: object,
) -> ClientConnection:
    """A socket authenticated by `Authorization` (header), `?token=` or subprotocol."""
    token = who.access_token if isinstance(who, Account) else who
    extra = dict(headers or {})
    subprotocols = None
    if token is not None:
        if how == "header":
            extra["Authorization"] = f"Bearer {token}"
        elif how == "query":
            params["token"] = token
        elif how == "subprotocol":
            subprotocols = ["bearer", token]
    return await connect(
        ws_url(server, path, **params),
        additional_headers=extra,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        open_timeout=5,
        max_size=2**22,
        compression=None,
    )


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    return json.loads(raw)


async def recv_until(
    ws: ClientConnection, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> dict[str, Any]:
    """The first message that satisfies `pred`, skipping others, within `timeout`."""
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if pred(msg):
                return msg


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the server closes; the close code."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except Exception:
            pass
    return ws.close_code
