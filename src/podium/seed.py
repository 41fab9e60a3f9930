"""`podium seed`: fake users, games and months of scores, bulk-loaded.

Users and events go in with COPY; board values are computed here with the same
operators as the write path, then COPYed too; Redis is rebuilt from them at the end
(the rebuild's bulk load). Every seeded user has the same password (printed, and
documented in the README). Each phase shows a progress bar on stderr when it is a
terminal; CI logs and pipes get none.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec

from podium.periods import period_start
from podium.settings import Settings
from podium.validation import PERIODS

SEED_PASSWORD = "podium-seed-password"
MAX_ABS = 2**53 - 1
# Bulk statements on a million rows outlast the pool's 30 s command timeout.
BULK_TIMEOUT_S = 1800
# Faker makes a name in tens of microseconds: a million users draw from this many (the
# hex suffix keeps every username unique).
NAME_POOL = 5000

# (id, name, order, operator, policy, min, max, actions)
GAMES: list[tuple[str, str, str, str, str, int | None, int | None, dict[str, int]]] = [
    ("space-race", "Space Race", "desc", "best", "client", 0, 1_000_000, {}),
    ("time-trial", "Time Trial (ms)", "asc", "best", "client", 1_000, 600_000, {}),
    (
        "gem-miner",
        "Gem Miner",
        "desc",
        "sum",
        "actions",
        None,
        None,
        {"gem": 10, "diamond": 50, "chest": 120},
    ),
    ("tower-climb", "Tower Climb", "desc", "last", "client", 0, 500, {}),
    ("penalty-box", "Penalty Box", "asc", "sum", "client", 0, 100, {}),
    (
        "quiz-night",
        "Quiz Night",
        "desc",
        "sum",
        "actions",
        None,
        None,
        {"right": 10, "streak": 25, "bonus": 40},
    ),
    ("drift-king", "Drift King", "desc", "best", "client", 0, 250_000, {}),
    ("golf-ace", "Golf Ace (strokes)", "asc", "best", "client", 18, 200, {}),
    ("arena-rank", "Arena Rank", "desc", "last", "authoritative", 0, 5_000, {}),
    ("bug-hunt", "Bug Hunt", "desc", "decr", "client", 1, 50, {}),
]


def next_value(op: str, descending: bool, old: int | None, value: int) -> int:
    """The same operator semantics as `podium_next_value` in the database."""
    if op == "best":
        if old is None:
            return value
        return max(old, value) if descending else min(old, value)
    if op == "sum":
        return (old or 0) + value
    if op == "last":
        return value
    return (old or 0) - value


class _State(msgspec.Struct, array_like=True):
    value: int
    reached_seq: int
    reached_at: datetime
    last_seq: int


def _score_for(
    game: tuple[Any, ...], rng: random.Random
) -> tuple[str, int | None, str | None, int]:
    _, _, order, _, policy, lo, hi, actions = game
    if policy == "actions":
        action = rng.choice(list(actions))
        return "action", actions[action], action, actions[action]
    lo = lo if lo is not None else 1
    hi = hi if hi is not None else 1000
    value = int(rng.triangular(lo, hi, lo + (hi - lo) * (0.3 if order == "desc" else 0.6)))
    return "score", value, None, value


async def seed(
    settings: Settings,
    users: int,
    games: int,
    months: int,
    events_per_user: int,
    reset: bool,
    random_seed: int | None,
    progress: bool = True,
) -> dict[str, object]:
    """Load the data; return counts and timings.

    `progress` shows a bar per phase on stderr, only when stderr is a terminal.
    """
    import time

    import bcrypt
    from faker import Faker
    from rich.console import Console
    from rich.progress import Progress

    from podium.app import close_services, open_services
    from podium.boards import index as board_index

    rng = random.Random(random_seed)
    fake = Faker()
    Faker.seed(random_seed if random_seed is not None else rng.randrange(2**32))
    catalogue = GAMES[: max(1, min(games, len(GAMES)))]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    services = await open_services(settings)
    try:
        pool = services.pool
        shown = progress and sys.stderr.isatty()
        with Progress(console=Console(stderr=True), disable=not shown, transient=False) as bar:
            if reset:
                task = bar.add_task("reset", total=1)
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(
                        "TRUNCATE score_events, score_flags, board_values, game_actions, games,"
                        " refresh_tokens, users RESTART IDENTITY CASCADE"
                    )
                bar.update(task, advance=1)

            task = bar.add_task("games", total=len(catalogue))
            for gid, name, order, op, policy, lo, hi, actions in catalogue:
                await pool.execute(
                    "INSERT INTO games (id, name, sort_order, operator, policy, min_score,"
                    " max_score) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                    gid,
                    name,
                    order,
                    op,
                    policy,
                    lo,
                    hi,
                )
                for action_name, points in actions.items():
                    await pool.execute(
                        "INSERT INTO game_actions (game_id, action, points) VALUES ($1, $2, $3)"
                        " ON CONFLICT DO NOTHING",
                        gid,
                        action_name,
                        points,
                    )
                bar.update(task, advance=1)
            rows = await pool.fetch(
                "SELECT id, sort_order, operator FROM games WHERE id = ANY($1::text[])",
                [g[0] for g in catalogue],
            )
            # The stored definition wins over the catalogue (a re-run must not disagree).
            defs = {r["id"]: (r["sort_order"] == "desc", r["operator"]) for r in rows}

            # Users: one bcrypt hash shared by all seeded users keeps this fast.
            t = time.perf_counter()
            task = bar.add_task("users", total=users)
            pw_hash = bcrypt.hashpw(SEED_PASSWORD.encode(), bcrypt.gensalt(12)).decode()
            tag = uuid.uuid4().hex[:4]
            pool_names = []
            for _ in range(min(users, NAME_POOL)):
                base = "".join(c for c in fake.user_name() if c.isalnum() or c in "_.-")[:20]
                pool_names.append(base or "player")
            user_rows = []
            for i in range(users):
                name = f"{pool_names[i % len(pool_names)]}_{tag}{i:x}"
                user_rows.append((name, f"{name}@example.com", pw_hash, "player"))
                if i % 5000 == 0:
                    bar.update(task, completed=i)
            async with pool.acquire() as conn:
                await conn.copy_records_to_table(
                    "users",
                    records=user_rows,
                    columns=["username", "email", "password_hash", "role"],
                    schema_name=settings.db_schema,
                    timeout=BULK_TIMEOUT_S,
                )
                id_rows = await conn.fetch(
                    "SELECT id FROM users WHERE username = ANY($1::text[]) ORDER BY id",
                    [r[0] for r in user_rows],
                    timeout=BULK_TIMEOUT_S,
                )
            user_ids = [r["id"] for r in id_rows]
            bar.update(task, completed=users)
            timings["users_s"] = time.perf_counter() - t

            # Events, in time order so the identity column numbers them in that order.
            t = time.perf_counter()
            total_events = users * events_per_user
            task = bar.add_task("events", total=total_events)
            now = datetime.now(UTC)
            span = timedelta(days=30 * months).total_seconds()
            events = []
            for uid in user_ids:
                for _ in range(events_per_user):
                    game = rng.choice(catalogue)
                    at = now - timedelta(seconds=rng.random() * span)
                    events.append((at, uid, game))
            events.sort(key=lambda e: e[0])
            states: dict[tuple[str, str, date, int], _State] = {}
            event_rows = []
            board_order: list[tuple[str, str, date, int]] = []
            for n, (at, uid, game) in enumerate(events):
                gid = game[0]
                descending, op = defs[gid]
                kind, value_in, action, _ = _score_for(game, rng)
                assert value_in is not None
                day = at.date()
                before = states.get((gid, "all", date(1970, 1, 1), uid))
                old_all = before.value if before else None
                event_rows.append(
                    [
                        uuid.uuid4(),
                        uid,
                        gid,
                        kind,
                        value_in,
                        action,
                        0,
                        old_all,
                        0,
                        at,
                        "seed",
                        "seed",
                        "seed",
                        None,
                    ]
                )
                for period in PERIODS:
                    start = period_start(period, day)
                    key: tuple[str, str, date, int] = (gid, period, start, uid)
                    st = states.get(key)
                    old = st.value if st else None
                    new = next_value(op, descending, old, value_in)
                    if abs(new) > MAX_ABS:
                        new = old if old is not None else 0
                    if old is None or new != old:
                        if st is None:
                            states[key] = _State(new, n, at, n)
                            board_order.append(key)
                        else:
                            st.value, st.reached_seq, st.reached_at, st.last_seq = new, n, at, n
                        if descending:
                            gkey = ("\x00global", period, start, uid)
                            gst = states.get(gkey)
                            diff = new - (old or 0)
                            if gst is None:
                                states[gkey] = _State(diff, n, at, n)
                                board_order.append(gkey)
                            else:
                                gst.value += diff
                                gst.last_seq = n
                                if diff:
                                    gst.reached_seq, gst.reached_at = n, at
                after = states[(gid, "all", date(1970, 1, 1), uid)].value
                row = event_rows[-1]
                row[6] = after - (old_all or 0)
                row[8] = after
                if n % 20000 == 0:
                    bar.update(task, completed=n)
            bar.update(task, completed=total_events)

            task = bar.add_task("copy events", total=2)
            async with pool.acquire() as conn:
                base = await conn.fetchval(
                    "SELECT nextval(pg_get_serial_sequence($1, 'seq'))",
                    f"{settings.db_schema}.score_events",
                )
                records = []
                for r in event_rows:
                    resp = msgspec.json.encode(
                        {
                            "game": r[2],
                            "user_id": r[1],
                            "score": r[8],
                            "delta": r[6],
                            "rank": None,
                            "previous_rank": None,
                            "duplicate": False,
                        }
                    ).decode()
                    records.append((*r[:13], resp))
                await conn.copy_records_to_table(
                    "score_events",
                    records=records,
                    columns=[
                        "event_id",
                        "user_id",
                        "game_id",
                        "kind",
                        "input",
                        "action",
                        "delta",
                        "value_before",
                        "value_after",
                        "created_at",
                        "client_addr",
                        "credential",
                        "payload_hash",
                        "response",
                    ],
                    schema_name=settings.db_schema,
                    timeout=BULK_TIMEOUT_S,
                )
                bar.update(task, advance=1)
                # The identity numbered the rows in COPY order: map local order -> seq.
                seqs = await conn.fetch(
                    "SELECT seq FROM score_events WHERE seq > $1 AND client_addr = 'seed'"
                    " AND credential = 'seed' ORDER BY seq LIMIT $2",
                    base,
                    len(records),
                    timeout=BULK_TIMEOUT_S,
                )
                seq_of = [r["seq"] for r in seqs]
                if len(seq_of) != len(records):
                    raise RuntimeError(
                        "concurrent writes while seeding; run seed on a quiet server"
                    )
                board_records = []
                for key in board_order:
                    st = states[key]
                    gid = "global" if key[0] == "\x00global" else key[0]
                    board_records.append(
                        (
                            gid,
                            key[1],
                            key[2],
                            key[3],
                            st.value,
                            seq_of[st.reached_seq],
                            st.reached_at,
                            seq_of[st.last_seq],
                        )
                    )
                await conn.copy_records_to_table(
                    "board_values",
                    records=board_records,
                    columns=[
                        "game_id",
                        "period",
                        "period_start",
                        "user_id",
                        "value",
                        "reached_seq",
                        "reached_at",
                        "last_seq",
                    ],
                    schema_name=settings.db_schema,
                    timeout=BULK_TIMEOUT_S,
                )
                bar.update(task, advance=1)
            timings["events_s"] = time.perf_counter() - t

            t = time.perf_counter()
            rows = await pool.fetchval("SELECT count(*) FROM board_values")
            task = bar.add_task("rebuild redis", total=rows)

            async def rebuilt(done: int) -> None:
                bar.update(task, completed=done)

            await board_index.rebuild(
                services.pool,
                services.redis,
                settings.redis_prefix,
                settings.retention_days,
                progress=rebuilt,
            )
            bar.update(task, completed=rows)
            timings["rebuild_s"] = time.perf_counter() - t
    finally:
        await close_services(services)
    timings["total_s"] = time.perf_counter() - t0
    return {
        "users": users,
        "games": len(catalogue),
        "events": users * events_per_user,
        "password": SEED_PASSWORD,
        **{k: round(v, 2) for k, v in timings.items()},
    }


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from podium.cli_common import CliError, resolved

    if args.users < 1 or args.events_per_user < 0 or args.months < 1:
        raise CliError("--users and --months must be >= 1, --events-per-user >= 0")
    if args.reset and not args.yes:
        if not sys.stdin.isatty():
            raise CliError("--reset deletes every user, game and score: add --yes to confirm")
        answer = input("--reset deletes every user, game and score. Type 'reset' to go on: ")
        if answer.strip() != "reset":
            raise CliError("not confirmed; nothing changed")
    with resolved(settings, "cli") as ready:
        result = asyncio.run(
            seed(
                ready,
                args.users,
                args.games,
                args.months,
                args.events_per_user,
                args.reset,
                args.seed,
            )
        )
    print(
        f"seeded {result['users']} users, {result['games']} games, {result['events']} events "
        f"in {result['total_s']}s (users {result['users_s']}s, events {result['events_s']}s, "
        f"rebuild {result['rebuild_s']}s)"
    )
    print(f"every seeded user's password: {SEED_PASSWORD}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "seed",
        help="load fake users, games and months of scores (bulk)",
        description=(
            "Load fake users, sample games and their scores with COPY, compute every board"
            " (each game's all-time, day, week and month boards, and the global boards),"
            " then rebuild Redis from them. Every seeded user's password is"
            f" {SEED_PASSWORD!r}. Progress bars go to stderr when it is a terminal."
            " A board of N users: --users N --games 1 --months 1 --events-per-user 1"
            " (8 board rows per user)."
        ),
    )
    p.add_argument(
        "--users", type=int, default=1000, help="how many users to create (default: %(default)s)"
    )
    p.add_argument(
        "--games",
        type=int,
        default=10,
        help=f"how many of the {len(GAMES)} sample games to create (default: %(default)s)",
    )
    p.add_argument(
        "--months",
        type=int,
        default=6,
        help="spread the scores over this many months before now (default: %(default)s)",
    )
    p.add_argument(
        "--events-per-user",
        type=int,
        default=10,
        help="score events per user, each on a random game (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="random seed, for a reproducible data set (default: a new one each run)",
    )
    p.add_argument(
        "--reset",
        action="store_true",
        help="delete every user, game and score first; asks unless --yes (default: off)",
    )
    p.add_argument(
        "--yes", action="store_true", help="confirm --reset without a prompt (default: off)"
    )
    p.set_defaults(func=cmd_seed)
