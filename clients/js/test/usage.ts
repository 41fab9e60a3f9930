// A game's typed use of every export of @podium/client, imported by the package name
// as a bundler resolves it (package.json "exports"). Only type-checked (`npm run check`),
// never run: a wrong declaration makes this file fail to compile.

import {
  BoardState,
  LiveSocket,
  Podium,
  PodiumError,
  PodiumSession,
  backoff,
  uuid4,
  type AckMessage,
  type BoardEntry,
  type ClientMessage,
  type ConnectionState,
  type DiffMessage,
  type Game,
  type LeaderboardPage,
  type LiveBoard,
  type LiveHandle,
  type Period,
  type RankMessage,
  type ScoreResult,
  type SeedPageRequest,
  type SeedReportRequest,
  type ServerMessage,
  type SnapshotMessage,
  type StatusEvent,
  type TokenHook,
  type User,
  type UserRank,
} from "@podium/client";

/** Every server message, handled once: a new message type breaks this switch. */
export function describe(msg: ServerMessage): string {
  switch (msg.type) {
    case "snapshot":
      return `${msg.board} at ${msg.seq}: ${msg.entries.map((r) => r.username).join(", ")}`;
    case "diff":
      return `${msg.prev_seq} -> ${msg.seq}: +${msg.upserts.length} -${msg.left.length}`;
    case "synced":
      return `in sync at ${msg.seq}`;
    case "subscribed":
      return `${msg.sub} (${msg.game} ${msg.period} ${msg.offset}+${msg.limit})`;
    case "unsubscribed":
      return msg.sub;
    case "page":
      return `${msg.sub}: ${msg.total} total, first ${msg.entries[0]?.achieved_at ?? "-"}`;
    case "rank":
      return msg.rank === null ? "not ranked" : `#${msg.rank} with ${msg.score} of ${msg.total}`;
    case "ack":
      return `${msg.event_id}: ${msg.score} (${msg.delta}) dup=${msg.duplicate}`;
    case "report":
      return `${msg.start}..${msg.end}: ${msg.result.map((r) => r.games_played).join()}`;
    case "error":
      return `${msg.code}: ${msg.message} ${msg.event_id ?? ""}`;
    case "pong":
      return "pong";
    case "authed":
      return `until ${msg.exp}`;
    default: {
      const unreachable: never = msg;
      return unreachable;
    }
  }
}

export async function play(baseUrl: string): Promise<void> {
  const session = new PodiumSession({ baseUrl, storage: null, key: "game.refresh" });
  session.onChange = (s) => console.log(s.loggedIn, s.user?.username, s.refreshToken);
  const user: User = await session.register({
    username: "ada",
    email: "ada@example.com",
    password: "correct horse",
  });
  const same: PodiumSession = await session.login(user.username, "correct horse");
  const resumed: boolean = await same.resume();
  const access: string | null = await session.getToken({ refresh: !resumed });
  await session.refresh();

  const hook: TokenHook = session.getToken;
  const client = new Podium({ baseUrl, getToken: hook });
  const service = new Podium({ baseUrl: "http://127.0.0.1:8000", token: access });
  const token: string | null = await client.token({ refresh: true });

  const games: Game[] = await client.games();
  const first = games[0];
  if (!first) return;
  const actions = await client.actions(first.id);
  const points: number = actions.reduce((sum, a) => sum + a.points, 0);
  const page: LeaderboardPage = await client.leaderboard(first.id, { period: "week", limit: 50 });
  const next: string | null = page.next_cursor;
  const mine: UserRank = await client.rankOf(first.id, user.id, { period: "month" });
  const percentile: number | null = mine.percentile;
  const raw = await client.request<{ games: Game[] }>("GET", "/games", undefined, {
    auth: true,
  });

  try {
    const result: ScoreResult = await client.submit({ game: first.id, score: 1900 });
    const again = await client.submit({
      game: first.id,
      action: actions[0]?.action ?? "win",
      eventId: uuid4(),
      retries: 2,
    });
    console.log(result.rank, result.previous_rank, again.duplicate);
  } catch (error) {
    if (error instanceof PodiumError) {
      const wait: number = error.retryAfter ?? backoff(0, 250, 4000) / 1000;
      console.log(error.status, error.code, error.message, error.details, wait);
    }
  }

  const period: Period = "day";
  const board: LiveBoard = client.scoreboard(first.id, period, {
    onSnapshot: (entries: BoardEntry[], msg: SnapshotMessage) =>
      console.log(entries.length, msg.period_start),
    onDiff: (entries, msg: DiffMessage) => console.log(entries[0]?.rank, msg.prev_seq),
    onStatus: (status: StatusEvent) => console.log(status.status, status.attempt, status.delay),
    onError: (msg) => console.log(msg.code),
  });
  const seq: number | null = board.seq;
  const state: ConnectionState = board.status;
  const me: LiveHandle = client.myScore(first.id, (msg: RankMessage) => console.log(msg.rank), {
    period: "week",
    onStatus: (s) => console.log(s.code, s.reason, s.error?.code),
  });
  board.close();
  me.close();

  const copy = new BoardState();
  copy.snapshot({ seq: 1, top: [[7, 2710]] });
  const outcome: "applied" | "stale" | "gap" = copy.diff({
    type: "diff",
    board: "chess:all:1970-01-01",
    seq: 2,
    prev_seq: 1,
    upserts: [{ rank: 1, user_id: 9, username: "bob", score: 2750 }],
    left: [7],
  });

  const acks: AckMessage[] = [];
  const socket = new LiveSocket(service, "/ws/v1/add-score", {}, {
    onMessage: (msg) => {
      if (msg.type === "ack") acks.push(msg);
    },
    onStatus: (s) => console.log(s.status),
    onNewBoard: () => undefined,
    since: () => null,
  });
  const write: ClientMessage = { type: "score", game: first.id, event_id: uuid4(), score: 5 };
  const seedPage: SeedPageRequest = { channel: "all", start: 0, end: 4 };
  const seedReport: SeedReportRequest = { start: "2026-11-01", end: "2026-11-30", limit: 4 };
  const sent: boolean = socket.send(write) && socket.send(seedPage) && socket.send(seedReport);
  socket.send({ type: "subscribe", game: first.id, period: "all", offset: 0, limit: 10 });
  socket.send({ type: "report", start: "2026-11-01", end: "2026-12-01", game: null });
  socket.reconnectNow();
  socket.close();
  console.log(socket.ws, socket.path, socket.params, socket.client.baseUrl);

  client.close();
  await session.logout();
  console.log(token, points, next, percentile, raw.games.length, seq, state, outcome, sent);
}
