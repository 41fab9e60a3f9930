"""`Client`: the blocking face of `AsyncClient`, for scripts and threads.

Every method runs the AsyncClient's own coroutine on one event loop that the Client
keeps in a daemon thread, so there is one implementation of auth, retries and
reconnects, not two. Live subscriptions are plain iterators (`for change in ...`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, Concatenate, Generic, ParamSpec, TypedDict, TypeVar, Unpack

import httpx

from podium.client.backoff import Backoff
from podium.client.core import AsyncClient
from podium.client.live import Subscription

P = ParamSpec("P")
T = TypeVar("T")


class Options(TypedDict, total=False):
    """AsyncClient's keyword arguments."""

    token: str | None
    refresh_token: str | None
    username: str | None
    password: str | None
    service_token: str | None
    timeout: float
    retries: int
    max_failures: int | None
    backoff: Backoff | None
    transport: httpx.AsyncBaseTransport | None


class _Loop:
    """An event loop running in its own daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="podium-client", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller: do not leave the request running
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class SyncSubscription(Generic[T]):
    """A live subscription as a blocking iterator; `close()` (or `with`) ends it."""

    def __init__(self, loop: _Loop, sub: Subscription[T]) -> None:
        self._loop = loop
        self.subscription = sub

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return self._loop.run(self.subscription.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def __enter__(self) -> SyncSubscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self.subscription.aclose())


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Client, P], T]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._loop.run(method(self._async, *args, **kwargs))

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


def _live(
    method: Callable[Concatenate[AsyncClient, P], Subscription[T]],
) -> Callable[Concatenate[Client, P], SyncSubscription[T]]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> SyncSubscription[T]:
        async def make() -> Subscription[T]:
            return method(self._async, *args, **kwargs)

        return SyncSubscription(self._loop, self._loop.run(make()))

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


class Client:
    """Blocking Podium client: the same arguments and methods as AsyncClient."""

    def __init__(self, base_url: str, **options: Unpack[Options]) -> None:
        self._loop = _Loop()

        async def make() -> AsyncClient:
            return AsyncClient(base_url, **options)

        try:
            self._async = self._loop.run(make())
        except BaseException:
            self._loop.stop()
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the subscriptions and connections, and stop the client's thread."""
        if not self._loop.loop.is_closed():
            self._loop.run(self._async.aclose())
        self._loop.stop()

    @property
    def access_token(self) -> str | None:
        return self._async.access_token

    @property
    def refresh_token(self) -> str | None:
        return self._async.refresh_token

    register = _blocking(AsyncClient.register)
    login = _blocking(AsyncClient.login)
    refresh = _blocking(AsyncClient.refresh)
    logout = _blocking(AsyncClient.logout)
    me = _blocking(AsyncClient.me)
    submit = _blocking(AsyncClient.submit)
    top = _blocking(AsyncClient.top)
    around = _blocking(AsyncClient.around)
    user_rank = _blocking(AsyncClient.user_rank)
    members = _blocking(AsyncClient.members)
    ranks = _blocking(AsyncClient.ranks)
    report = _blocking(AsyncClient.report)
    report_csv = _blocking(AsyncClient.report_csv)
    games = _blocking(AsyncClient.games)
    game = _blocking(AsyncClient.game)
    scoreboard = _live(AsyncClient.scoreboard)
    my_score = _live(AsyncClient.my_score)
    scores = _live(AsyncClient.scores)
