"""The WebSocket endpoints under /ws/v1: handshake checks, then the channel's handler.

Every endpoint authenticates before `accept`: a missing or bad token, or a foreign
Origin, refuses the handshake (HTTP 403); bad query parameters answer the handshake
with the usual JSON error body (400/404/422). The handlers are in ws_channels.py; see
docs/protocol.md.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from redis.exceptions import RedisError
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from podium import instance, metrics
from podium.api.podium import podium_of
from podium.api.responses import error_response
from podium.api.ws_channels import AddScore, Channel, MyScore, Reports, Scoreboard, Scores
from podium.auth.guards import authenticate_token, bearer_token
from podium.auth.tokens import TokenError
from podium.errors import (
    WS_INTERNAL,
    WS_REVOKED,
    WS_TOO_MANY_SOCKETS,
    ApiError,
    unavailable,
)
from podium.protocol import (
    Error,
)
from podium.realtime.direct import EXTENSION as DIRECT
from podium.realtime.session import Session, error_of
from podium.store.db import is_unavailable

log = logging.getLogger("podium.ws")


# -- handshake ---------------------------------------------------------------------------


def origin_allowed(ws: WebSocket, allowed: tuple[str, ...]) -> bool:
    """Browsers send Origin: accept our own host and the CORS allow-list, nothing else."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True  # not a browser (wscat, game servers): the token is the guard
    if origin in allowed or "*" in allowed:
        return True
    host = ws.headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


def offered_bearer_subprotocol(ws: WebSocket) -> bool:
    if ws.headers.get("authorization"):
        return False
    offered = [p.strip().lower() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    return len(offered) >= 2 and offered[0] == "bearer"


async def refuse(ws: WebSocket, exc: ApiError | None = None) -> None:
    """Answer the handshake with an HTTP error instead of a socket."""
    if exc is not None and "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(error_response(exc))
        return
    # Closing before accept is how ASGI refuses a handshake: the client sees HTTP 403.
    await ws.close(code=1008)


def _store_down(exc: Exception, during: str) -> bool:
    """A store outage is one warning line per refused handshake, not a traceback."""
    if is_unavailable(exc) or isinstance(exc, RedisError):
        log.warning("websocket %s refused: store unavailable (%s)", during, type(exc).__name__)
        return True
    return False


class Endpoint:
    """One WebSocket route: authenticate, prepare the channel, accept, run the session."""

    def __init__(self, channel: type[Channel]) -> None:
        self.channel = channel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        podium = podium_of(ws)
        services, hub = podium.services, podium.realtime.hub
        if not origin_allowed(ws, services.settings.cors_origins):
            await refuse(ws)
            return
        token = bearer_token(ws)
        if token is None:
            await refuse(ws)
            return
        authenticated_at = time.monotonic()
        try:
            principal = await authenticate_token(services, token)
        except TokenError:
            await refuse(ws)
            return
        except ApiError as exc:
            await refuse(ws, exc)
            return
        except Exception as exc:
            if not _store_down(exc, "authentication"):
                log.exception("websocket authentication failed")
            await refuse(ws, unavailable("sign-in cannot be checked right now"))
            return
        channel = self.channel(hub, ws, principal)
        try:
            await channel.prepare()
        except ApiError as exc:
            await refuse(ws, exc)
            return
        except Exception as exc:
            if not _store_down(exc, "handshake"):
                log.exception("websocket handshake failed")
            await refuse(ws, unavailable("the board cannot be read right now"))
            return
        session = Session(
            services,
            principal,
            receive,
            send,
            hub.limits,
            hub.unregister,
            channel.rate(),
            direct=scope.get("extensions", {}).get(DIRECT),
            on_reauth=hub.rebind,
        )
        registered = False
        endpoint = ""
        try:
            subprotocol = "bearer" if offered_bearer_subprotocol(ws) else None
            await ws.accept(subprotocol=subprotocol, headers=[instance.current.header])
            uid = principal.user_id
            if uid is not None and hub.sockets_of(uid) >= hub.limits.max_sockets_per_user:
                await session.close(WS_TOO_MANY_SOCKETS)
                return
            hub.register(session)
            subjects = (principal.family, principal.credential)
            if hub.recent_revocations.since(subjects, authenticated_at):
                # Revoked while this socket was being set up: the hub had none to close.
                await session.close(WS_REVOKED)
                return
            endpoint = scope["path"].rsplit("/", 1)[-1]
            metrics.WS_OPEN_SOCKETS.labels(endpoint).inc()
            registered = True
            session.start()
            try:
                await channel.opened(session)
            except ApiError as exc:
                session.reply(error_of(exc))
            await session.run(channel.handle, channel.seed)
        except OSError:
            pass  # the client vanished mid-handshake
        except Exception:
            log.exception("websocket session failed")
            await session.close(WS_INTERNAL)
        finally:
            try:
                await channel.release(session)
            finally:
                await session.teardown()
                if registered:
                    metrics.WS_OPEN_SOCKETS.labels(endpoint).dec()


routes = [
    WebSocketRoute("/ws/v1/scoreboard", Endpoint(Scoreboard)),
    WebSocketRoute("/ws/v1/scores", Endpoint(Scores)),
    WebSocketRoute("/ws/v1/my-score", Endpoint(MyScore)),
    WebSocketRoute("/ws/v1/add-score", Endpoint(AddScore)),
    WebSocketRoute("/ws/v1/reports", Endpoint(Reports)),
]

__all__ = ["Endpoint", "Error", "routes"]
