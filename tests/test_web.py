"""The web page in a real headless Chromium (Debian's), driven by Playwright.

Two browser contexts are two people. Everything waits on DOM conditions with a
timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    TEST_PASSWORD,
    Account,
    RunningApp,
    Stores,
    drop_test_state,
    make_admin,
    make_settings,
    register_and_login,
    running_app,
)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_COPY = Path(tempfile.gettempdir()) / "podium-screenshot.png"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no Chromium at /usr/bin/chromium (install Debian's `chromium` package)",
)

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield chromium
        finally:
            await chromium.close()


class Tab:
    """A page in its own browser context (its own storage: another person)."""

    def __init__(self, context: Any, page: Any) -> None:
        self.context = context
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        text = message.text
        # Failed requests are judged by status in _response; a refused or dropped socket
        # while the server restarts is expected. Anything else (a CSP violation, a
        # script error) is a bug.
        expected = ("Failed to load resource", "WebSocket", "ERR_CONNECTION")
        if message.type == "error" and not any(e in text for e in expected):
            self.problems.append(text)

    def _response(self, response: Any) -> None:
        if response.status == 404 or response.status >= 500:
            self.problems.append(f"{response.status} {response.url}")

    def row(self, user_id: int) -> Any:
        return self.page.locator(f'#board li[data-user-id="{user_id}"]')

    async def order(self) -> list[int]:
        ids = await self.page.eval_on_selector_all(
            "#board > li", "rows => rows.map(r => r.dataset.userId)"
        )
        return [int(i) for i in ids]


@pytest.fixture
async def tabs(browser: Any) -> AsyncIterator[Any]:
    opened: list[Tab] = []

    async def open_tab(width: int = 1100, height: int = 900, scheme: str = "light") -> Tab:
        context = await browser.new_context(
            viewport={"width": width, "height": height}, color_scheme=scheme
        )
        context.set_default_timeout(5000)
        tab = Tab(context, await context.new_page())
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        await tab.context.close()
    problems = [p for tab in opened for p in tab.problems]
    assert problems == [], problems


async def register_in_page(tab: Tab, url: str, username: str) -> None:
    page = tab.page
    await page.goto(url)
    await expect(page.locator("#auth")).to_be_visible()
    await page.locator("label[for=mode-register]").click()
    form = page.locator("#register-form")
    await form.get_by_label("Username", exact=True).fill(username)
    await form.get_by_label("Email", exact=True).fill(f"{username}@example.com")
    await form.get_by_label("Password", exact=True).fill(TEST_PASSWORD)
    await form.get_by_role("button", name="Create account").click()
    await expect(page.locator("#account-name")).to_have_text(username)


async def login_in_page(tab: Tab, url: str, username: str) -> None:
    page = tab.page
    await page.goto(url)
    form = page.locator("#login-form")
    await form.get_by_label("Username or email").fill(username)
    await form.get_by_label("Password", exact=True).fill(TEST_PASSWORD)
    await form.get_by_role("button", name="Log in").click()
    await expect(page.locator("#account-name")).to_have_text(username)


async def test_register_reload_and_logout(
    server: RunningApp, client: httpx.AsyncClient, tabs: Any, tmp_path: Path
) -> None:
    tab = await tabs()
    page = tab.page
    username = f"w{uuid.uuid4().hex[:10]}"
    await register_in_page(tab, server.url, username)
    refresh = await page.evaluate("localStorage.getItem('podium.refresh')")
    assert refresh

    # A reload resumes the session from the stored refresh token (rotating it).
    await page.reload()
    await expect(page.locator("#account-name")).to_have_text(username)
    await expect(page.locator("#auth")).to_be_hidden()
    first_rotation = await page.evaluate("localStorage.getItem('podium.refresh')")
    assert first_rotation and first_rotation != refresh

    # A second tab of the same browser shares the session (and rotates it again).
    other = await tab.context.new_page()
    await other.goto(server.url)
    await expect(other.locator("#account-name")).to_have_text(username)
    rotated = await page.evaluate("localStorage.getItem('podium.refresh')")
    assert rotated != first_rotation

    await page.get_by_role("button", name="Log out").click()
    await expect(page.locator("#auth")).to_be_visible()
    await expect(page.get_by_label("Username or email")).to_be_focused()
    assert await page.evaluate("localStorage.getItem('podium.refresh')") is None
    # Logging out in one tab logs out the other.
    await expect(other.locator("#login-error")).to_have_text("You logged out in another tab.")
    await expect(other.locator("#app")).to_be_hidden()
    await other.close()
    # The server revoked the session, not just this browser.
    r = await client.post("/auth/refresh", json={"refresh_token": rotated})
    assert r.status_code == 401
    await page.reload()
    await expect(page.locator("#auth")).to_be_visible()
    await page.screenshot(path=str(tmp_path / "podium-login.png"))

    # Bad credentials: a clear message, and the form stays usable.
    form = page.locator("#login-form")
    await form.get_by_label("Username or email").fill(username)
    await form.get_by_label("Password", exact=True).fill("wrong-password-1")
    await form.get_by_role("button", name="Log in").click()
    await expect(page.locator("#login-error")).to_contain_text("invalid")
    await login_in_page(tab, server.url, username)


# ---------- the live board ----------


async def create_game(
    http: httpx.AsyncClient, admin: Account, game_id: str, **fields: object
) -> None:
    body = {"id": game_id, "name": game_id.title(), "order": "desc", "operator": "best"}
    body.update(fields)
    r = await http.post("/games", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text


async def post_score(
    http: httpx.AsyncClient, account: Account, game: str, score: int
) -> dict[str, Any]:
    body = {"game": game, "event_id": str(uuid.uuid4()), "score": score}
    r = await http.post("/scores", json=body, headers=account.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def user_id_of(http: httpx.AsyncClient, username: str) -> int:
    r = await http.post("/auth/login", json={"username": username, "password": TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return int(r.json()["user"]["id"])


async def wait_order(tab: Tab, ids: list[int], timeout: float = 1000) -> None:
    """Wait until the board lists exactly these user ids, in this order."""
    await tab.page.wait_for_function(
        """want => JSON.stringify([...document.querySelectorAll('#board > li')]
                 .map(li => Number(li.dataset.userId))) === JSON.stringify(want)""",
        arg=ids,
        timeout=timeout,
    )


DOT_STYLE = """() => {
  const style = getComputedStyle(document.querySelector('#conn .conn-dot'));
  const probe = document.createElement('span');
  document.body.append(probe);
  probe.style.color = 'var(--ok)';
  const ok = getComputedStyle(probe).color;
  probe.remove();
  return [style.animationName, style.backgroundColor, ok];
}"""


async def wait_live(tab: Tab, timeout: float = 5000) -> None:
    await expect(tab.page.locator("#conn")).to_have_attribute("data-state", "live", timeout=timeout)
    # The dot says so too: steady (no pulse) and in the "ok" colour.
    animation, colour, ok = await tab.page.evaluate(DOT_STYLE)
    assert animation == "none" and colour == ok, (animation, colour, ok)


async def settled(page: Any) -> None:
    """Wait for the page's finite animations (moves, flashes) to end: a still picture."""
    await page.wait_for_function(
        """() => document.getAnimations().every(
             a => a.playState !== 'running' || a.effect.getTiming().iterations === Infinity)""",
        timeout=5000,
    )


# Records which rows the page animates and the fewest rows the board ever shows, so a
# test can tell "moved in place" from "rebuilt" and "never emptied" from "blinked".
WATCH_BOARD = """() => {
  const board = document.getElementById('board');
  window.__animated = [];
  window.__fewest = board.children.length;
  const animate = Element.prototype.animate;
  Element.prototype.animate = function (...args) {
    if (this.dataset && this.dataset.userId) window.__animated.push(Number(this.dataset.userId));
    return animate.apply(this, args);
  };
  new MutationObserver(() => {
    window.__fewest = Math.min(window.__fewest, board.children.length);
  }).observe(board, { childList: true });
  window.__before = new Map([...board.children].map(li => [li.dataset.userId, li]));
}"""


async def test_two_players_see_the_board_move_live(
    server: RunningApp,
    client: httpx.AsyncClient,
    admin: Account,
    tabs: Any,
    tmp_path: Path,
) -> None:
    await create_game(client, admin, "arena", policy="client")
    c1, c2, c3, bob = [await register_and_login(client) for _ in range(4)]
    for account, score in ((c1, 300), (c2, 200), (c3, 100), (bob, 50)):
        await post_score(client, account, "arena", score)

    alice = f"alice{uuid.uuid4().hex[:6]}"
    tab_a, tab_b = await tabs(), await tabs()
    await register_in_page(tab_a, server.url, alice)
    alice_id = await user_id_of(client, alice)
    await login_in_page(tab_b, server.url, bob.username)
    for tab in (tab_a, tab_b):
        await wait_live(tab)
        await expect(tab.page.locator("#board-game")).to_have_text("Arena")
    await wait_order(tab_b, [c1.id, c2.id, c3.id, bob.id], timeout=5000)
    await expect(tab_b.page.locator("#me-rank")).to_have_text("#4")
    await expect(tab_b.row(bob.id)).to_have_class(re.compile(r"\bmine\b"))
    await expect(tab_a.page.locator("#me-rank")).to_have_text("\u2013")  # an en dash: no rank yet

    # Alice plays in her browser: she enters at #2 on Bob's screen within a second.
    page_a = tab_a.page
    await page_a.get_by_label("Score").fill("250")
    await page_a.get_by_role("button", name="Submit score").click()
    await expect(page_a.locator("#play-result")).to_contain_text("rank #2")
    await wait_order(tab_b, [c1.id, alice_id, c2.id, c3.id, bob.id])
    await expect(tab_b.page.locator("#me-rank")).to_have_text("#5", timeout=1000)
    await expect(tab_a.page.locator("#me-rank")).to_have_text("#2", timeout=1000)

    # She passes the leader: the same row element glides to the top; nothing is rebuilt.
    await tab_b.page.evaluate(WATCH_BOARD)
    await page_a.get_by_label("Score").fill("350")
    await page_a.get_by_role("button", name="Submit score").click()
    await expect(page_a.locator("#play-result")).to_contain_text("up from #2")
    await wait_order(tab_b, [alice_id, c1.id, c2.id, c3.id, bob.id])
    kept = await tab_b.page.evaluate(
        """() => [...document.querySelectorAll('#board > li')]
                 .every(li => window.__before.get(li.dataset.userId) === li)"""
    )
    assert kept, "rows were recreated instead of moved"
    assert await tab_b.page.evaluate("window.__fewest") == 5, "the board emptied or blinked"
    animated = await tab_b.page.evaluate("window.__animated")
    assert alice_id in animated and c1.id in animated
    await expect(tab_b.row(alice_id).locator(".score")).to_have_text("350")
    await expect(tab_b.row(alice_id).locator(".score")).to_have_class("score flash")
    await expect(tab_b.row(alice_id).locator(".rank")).to_have_text("1")

    # Bob answers from his browser: his result shows at once, both boards follow.
    page_b = tab_b.page
    await page_b.get_by_label("Score").fill("400")
    await page_b.get_by_role("button", name="Submit score").click()
    await expect(page_b.locator("#play-result")).to_contain_text("rank #1")
    await expect(page_b.locator("#me-rank")).to_have_text("#1", timeout=1000)
    await expect(page_b.locator("#announcer")).to_have_text("You moved up to rank 1.")
    await wait_order(tab_a, [bob.id, alice_id, c1.id, c2.id, c3.id])
    await expect(page_a.locator("#me-rank")).to_have_text("#2", timeout=1000)
    await wait_order(tab_b, [bob.id, alice_id, c1.id, c2.id, c3.id])

    shot = tmp_path / "podium-board.png"
    await settled(page_b)
    await page_b.screenshot(path=str(shot), full_page=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)


async def test_action_game_button_sends_an_action(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, tabs: Any
) -> None:
    await create_game(client, admin, "quest", policy="actions", operator="sum")
    for action, points in (("win", 10), ("draw", 3)):
        r = await client.put(
            f"/games/quest/actions/{action}", json={"points": points}, headers=admin.headers
        )
        assert r.status_code == 200, r.text
    tab = await tabs()
    name = f"p{uuid.uuid4().hex[:8]}"
    await register_in_page(tab, server.url, name)
    page = tab.page
    await wait_live(tab)
    await expect(page.get_by_label("Score")).to_be_hidden()
    action = page.get_by_label("Action")
    await expect(action.locator("option")).to_have_text(["draw (+3)", "win (+10)"])
    await action.select_option("win")
    # Keyboard only: focus the button and press Enter.
    await page.get_by_role("button", name="Do an action").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#play-result")).to_have_text("+10 · score 10 · rank #1")
    await expect(page.locator("#me-score")).to_have_text("10", timeout=1000)
    await action.select_option("draw")
    await page.get_by_role("button", name="Do an action").click()
    await expect(page.locator("#play-result")).to_contain_text("+3 · score 13")
    await expect(page.locator("#board .score")).to_have_text(["13"], timeout=1000)
    await expect(page.locator("#board .name-text")).to_have_text([name])

    # The answer to a write is lost on the way back: podium.js retries with the same
    # event id, and the server counts it once and says so.
    sent: list[dict[str, Any]] = []

    async def lose_first_answer(route: Any) -> None:
        sent.append(route.request.post_data_json)
        if len(sent) == 1:
            await route.fetch()  # the server does the write...
            await route.abort("connectionreset")  # ...and the page never hears of it
        else:
            await route.continue_()

    await page.route("**/api/v1/scores", lose_first_answer)
    await action.select_option("win")
    await page.get_by_role("button", name="Do an action").click()
    await expect(page.locator("#play-result")).to_have_text(
        "+10 · score 23 · rank #1 (already counted)"
    )
    assert len(sent) == 2 and sent[0]["event_id"] == sent[1]["event_id"]
    await expect(page.locator("#board .score")).to_have_text(["23"], timeout=1000)

    # The overall board (every high-is-better game): watchable, not playable.
    await page.get_by_label("Game").select_option(label="All games (overall)")
    await expect(page.locator("#board-game")).to_have_text("All games (overall)")
    await expect(page.locator("#board .name-text")).to_have_text([name], timeout=5000)
    await expect(page.locator("#board .score")).to_have_text(["23"])
    await expect(page.locator("#me-rank")).to_have_text("#1")
    await expect(page.get_by_role("button", name="Do an action")).to_be_disabled()


async def test_phone_width_and_my_rank_outside_the_top_10(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, tabs: Any, tmp_path: Path
) -> None:
    await create_game(client, admin, "sprint", policy="client", order="asc", name="Sprint 100 m")
    others = [await register_and_login(client) for _ in range(11)]
    for i, account in enumerate(others):
        await post_score(client, account, "sprint", 10_000 + i)  # asc: lower is better
    me = await register_and_login(client)
    await post_score(client, me, "sprint", 99_000)
    tab = await tabs(width=360, height=780, scheme="dark")
    await login_in_page(tab, server.url, me.username)
    await wait_live(tab)
    await wait_order(tab, [a.id for a in others[:10]], timeout=5000)
    await expect(tab.page.locator("#me-rank")).to_have_text("#12")
    await expect(tab.page.locator("#me-note")).to_have_text("2 places from the top 10.")
    overflow = await tab.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow}px wider than a 360px phone"
    # Period switch by keyboard (radio group): the board follows.
    await tab.page.locator("#period-all").focus()
    await tab.page.keyboard.press("ArrowRight")
    await expect(tab.page.locator("#period-month")).to_be_checked()
    await wait_order(tab, [a.id for a in others[:10]], timeout=5000)
    await settled(tab.page)
    await tab.page.screenshot(path=str(tmp_path / "podium-phone.png"), full_page=True)


async def test_reconnects_and_resyncs_after_the_server_restarts(
    server: RunningApp, client: httpx.AsyncClient, admin: Account, tabs: Any
) -> None:
    await create_game(client, admin, "relay", policy="client")
    leader, me, late = [await register_and_login(client) for _ in range(3)]
    await post_score(client, leader, "relay", 500)
    await post_score(client, me, "relay", 100)
    tab = await tabs()
    sockets: list[str] = []
    tab.page.on("websocket", lambda ws: sockets.append(ws.url))
    await login_in_page(tab, server.url, me.username)
    await wait_live(tab)
    await wait_order(tab, [leader.id, me.id], timeout=5000)
    await tab.page.evaluate(WATCH_BOARD)

    # Another instance on the same stores keeps taking writes while this one is down.
    async with running_app(server.settings) as other:
        await server.stop()  # closes the page's sockets (1001)
        await expect(tab.page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
        async with httpx.AsyncClient(base_url=other.url + "/api/v1", timeout=10) as http:
            await post_score(http, late, "relay", 300)
        # The board the page shows stays as it was while it is offline.
        assert await tab.order() == [leader.id, me.id]

    again = RunningApp(server.settings)
    again.port = server.port  # same address: the page's own reconnect finds it
    await again.start()
    try:
        await wait_live(tab, timeout=15000)
        # It resumed with the seq it had, got the missed write, and kept its rows.
        await wait_order(tab, [leader.id, late.id, me.id], timeout=5000)
        assert any("/ws/v1/scoreboard" in url and "since=" in url for url in sockets[2:])
        kept = await tab.page.evaluate("[...window.__before].every(([id, li]) => li.isConnected)")
        assert kept, "rows were recreated on resync"
        assert await tab.page.evaluate("window.__fewest") >= 2, "the board emptied on resync"
        await expect(tab.page.locator("#me-rank")).to_have_text("#3", timeout=2000)
        # And it is live again.
        await post_score(client, me, "relay", 900)
        await wait_order(tab, [me.id, leader.id, late.id])
        await expect(tab.page.locator("#me-rank")).to_have_text("#1", timeout=1000)
    finally:
        await again.stop()


async def test_open_sockets_get_a_fresh_token_before_it_expires(stores: Stores, tabs: Any) -> None:
    # Three-second access tokens: the page must renew them on its open sockets (an
    # `auth` message) rather than be closed with 4001 and reconnect.
    settings = make_settings(stores, access_token_ttl=3)
    try:
        async with (
            running_app(settings) as app,
            httpx.AsyncClient(base_url=app.url + "/api/v1", timeout=10) as http,
        ):
            admin = await make_admin(app, http)
            await create_game(http, admin, "blitz", policy="client")
            me = await register_and_login(http)
            await post_score(http, me, "blitz", 10)
            tab = await tabs()
            opened: list[str] = []
            renewed = asyncio.Event()
            authed: list[str] = []

            def on_socket(ws: Any) -> None:
                opened.append(ws.url)

                def on_frame(payload: str | bytes) -> None:
                    if "/scoreboard" in ws.url and '"type":"authed"' in str(payload):
                        authed.append(str(payload))
                        if len(authed) >= 2:
                            renewed.set()

                ws.on("framereceived", on_frame)

            tab.page.on("websocket", on_socket)
            await login_in_page(tab, app.url, me.username)
            await wait_live(tab)
            await wait_order(tab, [me.id], timeout=5000)
            # Two renewals means the socket outlived its first token and its second.
            await asyncio.wait_for(renewed.wait(), 15)
            assert len(opened) == 2, opened  # scoreboard and my-score, never reopened
            await expect(tab.page.locator("#conn")).to_have_attribute("data-state", "live")
            me_again = await register_and_login(http)
            await post_score(http, me_again, "blitz", 20)
            await wait_order(tab, [me_again.id, me.id])
    finally:
        await drop_test_state(settings)


PODIUM_JS_UNITS = """async () => {
  const m = await import('/static/podium.js');
  const out = {};
  const board = new m.BoardState();
  const row = (rank, user_id, score) => ({ rank, user_id, username: 'u' + user_id, score });
  const top = [row(1, 1, 30), row(2, 2, 20), row(3, 3, 10)];
  board.snapshot({ type: 'snapshot', seq: 5, entries: top });
  out.stale = board.diff({ type: 'diff', seq: 5, prev_seq: 4, upserts: [], left: [] });
  out.gap = board.diff({ type: 'diff', seq: 9, prev_seq: 7, upserts: [], left: [] });
  out.applied = board.diff({
    type: 'diff', seq: 8, prev_seq: 5,
    upserts: [row(1, 3, 40), row(2, 1, 30), row(3, 2, 20), row(4, 4, 5)], left: [],
  });
  out.afterMove = board.entries.map(e => [e.rank, e.user_id, e.score]);
  const swap = [row(3, 4, 25), row(4, 2, 20)];
  board.diff({ type: 'diff', seq: 9, prev_seq: 8, upserts: swap, left: [] });
  board.diff({ type: 'diff', seq: 10, prev_seq: 9, upserts: [], left: [2] });
  out.afterLeave = board.entries.map(e => [e.rank, e.user_id]);
  out.seq = board.seq;
  const delays = [];
  for (let attempt = 0; attempt < 12; attempt++) delays.push(m.backoff(attempt));
  out.delays = delays;
  out.uuids = [m.uuid4(), m.uuid4()];
  return out;
}"""


async def test_podium_js_board_state_backoff_and_ids(server: RunningApp, tabs: Any) -> None:
    tab = await tabs()
    await tab.page.goto(server.url)
    out = await tab.page.evaluate(PODIUM_JS_UNITS)
    assert (out["stale"], out["gap"], out["applied"]) == ("stale", "gap", "applied")
    assert out["afterMove"] == [[1, 3, 40], [2, 1, 30], [3, 2, 20], [4, 4, 5]]
    assert out["afterLeave"] == [[1, 3], [2, 1], [3, 4]]
    assert out["seq"] == 10
    for attempt, delay in enumerate(out["delays"]):
        ceiling = min(15000, 500 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)
    assert out["uuids"][0] != out["uuids"][1]
    for value in out["uuids"]:
        assert str(uuid.UUID(value)) == value and uuid.UUID(value).version == 4
