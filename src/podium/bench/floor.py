"""The floor: a bare `websockets` broadcast server, to measure Podium against.

Subscribers connect to `/`; a writer connects to `/publish`, sends a payload, and the
server broadcasts it to every subscriber (no compression) and answers "ok". Run:
`python -m podium.bench.floor --port 9000`.
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.server import ServerConnection, broadcast, serve

subscribers: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path.startswith("/publish"):
        async for message in ws:
            broadcast(subscribers, message)
            await ws.send("ok")
        return
    subscribers.add(ws)
    try:
        await ws.wait_closed()
    finally:
        subscribers.discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=16) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
