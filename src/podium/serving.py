"""One serving process: the uvicorn config every `podium serve` process runs with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from podium.settings import Settings

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp


def uvicorn_config(app: ASGIApp, settings: Settings, *, proxy_headers: bool) -> uvicorn.Config:
    """The same for a lone `serve` and for each of its `--workers`."""
    # Imported here: `serve` imports uvicorn only once the data dir is its own, so a
    # second `serve` on the same dir is refused at once.
    import uvicorn

    from podium.realtime.direct import PodiumWebSocketProtocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws=PodiumWebSocketProtocol,
        ws_per_message_deflate=settings.ws_compression,
        ws_max_size=64 * 1024,
        timeout_graceful_shutdown=5,
        lifespan="on",
        proxy_headers=proxy_headers,
        # Never uvicorn's FORWARDED_ALLOW_IPS: only the proxies named in our settings
        # (an empty list trusts none), and "*" is refused by the settings.
        forwarded_allow_ips=list(settings.trusted_proxies),
    )
