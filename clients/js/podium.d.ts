// Type declarations for podium.js, the Podium browser client (@podium/client).
//
// The wire messages mirror src/podium/protocol.py (docs/protocol.md), the HTTP bodies the
// API's Structs. podium.js is checked against this file (`tsc --noEmit`, checkJs), and
// test/usage.ts uses every export.

// --- Shapes shared by the HTTP API and the WebSocket protocol ------------------------

/** A board's period: always the current UTC one (ISO weeks start on Monday). */
export type Period = "all" | "day" | "week" | "month";
/** A calendar date, `YYYY-MM-DD`. */
export type IsoDate = string;
/** An instant, ISO 8601 with an offset (`2026-11-20T10:00:00Z`). */
export type IsoDateTime = string;

/** A row of a board's top, as pushed on `/ws/v1/scoreboard`. */
export interface Row {
  rank: number;
  user_id: number;
  username: string;
  score: number;
}

/** A row of a page of any depth: also when the score was reached. */
export interface PageRow extends Row {
  achieved_at: IsoDateTime | null;
}

// --- Client -> server messages -------------------------------------------------------

/** A fresh access token for an open socket, sent before the current one expires. */
export interface AuthMessage {
  type: "auth";
  /** 1..4096 characters. */
  token: string;
}

export interface PingMessage {
  type: "ping";
}

/** Subscribe to a page of a board on `/ws/v1/scores` (at most 20 per socket). */
export interface SubscribeMessage {
  type: "subscribe";
  /** A game id, `^[a-z0-9-]{1,40}$`, or `global`. */
  game: string;
  period?: Period;
  /** 0..1,000,000; default 0. */
  offset?: number;
  /** 1..200; default 10. */
  limit?: number;
}

export interface UnsubscribeMessage {
  type: "unsubscribe";
  game: string;
  period?: Period;
  offset?: number;
  limit?: number;
}

/** The fields of a score write (`POST /api/v1/scores` and `/ws/v1/add-score`). */
export interface ScoreFields {
  game: string;
  /** An integer, magnitude at most 2^53 - 1. Exactly one of `score` and `action`. */
  score?: number | null;
  /** `^[A-Za-z0-9_.-]{1,64}$`. */
  action?: string | null;
  /** The player a service credential writes for. */
  user_id?: number | null;
  /** Unix seconds, for signed actions. */
  ts?: number | null;
  /** 64 hex digits: HMAC-SHA256 of `user_id|game|what|event_id|ts`. */
  signature?: string | null;
}

/** A score write on `/ws/v1/add-score`, answered by `ack` or `error` (same `event_id`). */
export interface SubmitScoreMessage extends ScoreFields {
  type: "score";
  /** A UUID, made once per write so a retry never counts twice. */
  event_id: string;
}

/** The top players of [start, end) on `/ws/v1/reports`. */
export interface ReportRequestMessage {
  type: "report";
  start: IsoDate;
  end: IsoDate;
  /** 1..1000; default 10. */
  limit?: number;
  /** A game id; absent or null: every game. */
  game?: string | null;
}

/** Seed 001's untagged `/scores` request: inclusive 0-based indices. */
export interface SeedPageRequest {
  start: number;
  end: number;
  /** A game id; `all` is the global board. */
  channel?: string | null;
  game?: string | null;
}

/** Seed 001's untagged `/reports` request: ISO dates or datetimes, `end` inclusive. */
export interface SeedReportRequest {
  start: string;
  end: string;
  limit?: number;
}

/** Every tagged message a client sends. */
export type ClientMessage =
  | AuthMessage
  | PingMessage
  | SubscribeMessage
  | UnsubscribeMessage
  | SubmitScoreMessage
  | ReportRequestMessage;

// --- Server -> client messages -------------------------------------------------------

/** The whole top of a board at `seq`; replaces whatever the client held. */
export interface SnapshotMessage {
  type: "snapshot";
  /** `game:period:period_start`. */
  board: string;
  game: string;
  period: Period;
  period_start: IsoDate;
  seq: number;
  entries: Row[];
}

/** The net change from `prev_seq` to `seq`; apply it only when holding `prev_seq`. */
export interface DiffMessage {
  type: "diff";
  board: string;
  seq: number;
  prev_seq: number;
  /** Rows that are new in the top or whose rank or score changed. */
  upserts: Row[];
  /** User ids no longer in the top. */
  left: number[];
}

/** The answer to `?since=` when the client missed nothing. */
export interface SyncedMessage {
  type: "synced";
  board: string;
  seq: number;
}

export interface SubscribedMessage {
  type: "subscribed";
  /** `game:period:offset:limit`: names the page in `page` and `unsubscribed`. */
  sub: string;
  game: string;
  period: Period;
  offset: number;
  limit: number;
}

export interface UnsubscribedMessage {
  type: "unsubscribed";
  sub: string;
}

/** A live page of a board; each one replaces the last for its `sub`. */
export interface PageMessage {
  type: "page";
  sub: string;
  board: string;
  game: string;
  period: Period;
  period_start: IsoDate;
  seq: number;
  offset: number;
  limit: number;
  total: number;
  entries: PageRow[];
}

/** The caller's own standing on `/ws/v1/my-score`: on connect and on every change. */
export interface RankMessage {
  type: "rank";
  game: string;
  period: Period;
  /** Null while the caller is not on the board. */
  rank: number | null;
  score: number | null;
  total: number;
}

/** A durable write on `/ws/v1/add-score`. */
export interface AckMessage {
  type: "ack";
  event_id: string;
  score: number;
  delta: number;
  rank: number | null;
  duplicate: boolean;
}

/** A row of a report: a player's total over the range. */
export interface ReportRow {
  rank: number;
  user_id: number;
  username: string;
  score: number;
  games_played: number;
  games: number;
  last_played_at: IsoDateTime;
}

/** The answer to a `report` request, as `GET /api/v1/reports/top`. */
export interface ReportMessage {
  type: "report";
  start: IsoDate;
  end: IsoDate;
  limit: number;
  game: string | null;
  result: ReportRow[];
  total_count: number;
}

/** A message the server could not use, or a refused write (with its `event_id`). */
export interface ErrorMessage {
  type: "error";
  /** `invalid`, `bad_json`, `unknown_type`, `rate_limited`, `not_found`, `forbidden`, ... */
  code: string;
  message: string;
  event_id?: string;
  details?: unknown;
}

export interface PongMessage {
  type: "pong";
}

/** The answer to `auth`: the socket now runs on the new token until `exp`. */
export interface AuthedMessage {
  type: "authed";
  exp: number;
}

/** Every tagged message the server sends. */
export type ServerMessage =
  | SnapshotMessage
  | DiffMessage
  | SyncedMessage
  | SubscribedMessage
  | UnsubscribedMessage
  | PageMessage
  | RankMessage
  | AckMessage
  | ReportMessage
  | ErrorMessage
  | PongMessage
  | AuthedMessage;

/** Seed 001's answer shape on `/scores`. */
export interface SeedPage {
  result: { rank: number; user_id: number; player: string; score: number; date: IsoDate }[];
  total_count: number;
}

/** Seed 001's answer shape on `/reports`. */
export interface SeedReport {
  result: { name: string; score: number; games: number; game: string; date: IsoDate }[];
}

// --- HTTP bodies ---------------------------------------------------------------------

export interface User {
  id: number;
  username: string;
  email: string;
  role: string;
  created_at: IsoDateTime;
}

/** The answer to a login or a refresh. */
export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: string;
  /** Seconds. */
  expires_in: number;
  user: User;
}

export interface Game {
  id: string;
  name: string;
  order: "desc" | "asc";
  operator: "best" | "sum" | "last" | "decr";
  policy: "client" | "actions" | "authoritative";
  min_score: number | null;
  max_score: number | null;
  max_delta: number | null;
  delta_window_s: number;
  created_at: IsoDateTime;
  /** Writes must carry an HMAC signature. */
  signed: boolean;
}

export interface GameAction {
  action: string;
  points: number;
}

/** `GET /api/v1/leaderboards/{game}`. */
export interface LeaderboardPage {
  game: string;
  period: Period;
  period_start: IsoDate;
  total: number;
  entries: PageRow[];
  next_cursor: string | null;
}

/** `GET /api/v1/leaderboards/{game}/users/{id}`. */
export interface UserRank {
  game: string;
  period: Period;
  period_start: IsoDate;
  user_id: number;
  rank: number | null;
  score: number | null;
  total: number;
  percentile: number | null;
}

/** The answer to a score write. */
export interface ScoreResult {
  game: string;
  user_id: number;
  score: number;
  delta: number;
  rank: number | null;
  previous_rank: number | null;
  /** True when this event id was written before: the first result, counted once. */
  duplicate: boolean;
}

// --- The client ----------------------------------------------------------------------

/** An error answered by the API (or a refused token). */
export declare class PodiumError extends Error {
  constructor(status: number, code: string, message: string, details?: unknown);
  status: number;
  /** The API's error code: `invalid`, `not_found`, `rate_limited`, `unavailable`, ... */
  code: string;
  details: unknown;
  /** Seconds from a `Retry-After` header, when the server sent one. */
  retryAfter?: number | null;
}

/** A random (v4) UUID, also outside secure contexts. */
export declare function uuid4(): string;

/** Exponential backoff with equal jitter, in ms: attempt 0 is about `base`, at most `cap`. */
export declare function backoff(attempt: number, base?: number, cap?: number): number;

/**
 * Returns an access token (or a service credential); with `refresh: true` a fresh one.
 * `PodiumSession#getToken` is one.
 */
export type TokenHook = (options: { refresh: boolean }) => Promise<string | null> | string | null;

export interface PodiumOptions {
  /** The server's origin; the page's own in a browser page. Required elsewhere. */
  baseUrl?: string;
  /** A fixed token (e.g. a service credential); `getToken` wins when both are given. */
  token?: string | null;
  getToken?: TokenHook | null;
}

export interface RequestOptions {
  /** Send the token (default true). */
  auth?: boolean;
  /** Internal: this call is the retry after a 401. */
  retried?: boolean;
}

export interface SubmitOptions {
  game: string;
  /** Exactly one of `score` and `action`. */
  score?: number;
  action?: string | null;
  /** Made once by default; pass your own to retry a write across page loads. */
  eventId?: string;
  /** Retries of network errors, 429 and 5xx (default 4). */
  retries?: number;
}

export type ConnectionState = "connecting" | "reconnecting" | "open" | "closed" | "unauthorized";

/** What `onStatus` is told on every connection change. */
export interface StatusEvent {
  status: ConnectionState;
  /** Failed attempts in the current run (0 once open). */
  attempt: number;
  /** The wait before the next attempt, ms (`reconnecting`). */
  delay?: number;
  /** The close code that ended the last socket. */
  code?: number | null;
  reason?: string;
  /** Why the token hook gave up (`unauthorized`). */
  error?: PodiumError;
}

/** A board row as the client holds it (rows from a legacy `[user_id, score]` top lack a name). */
export interface BoardEntry {
  rank: number;
  user_id: number;
  score: number;
  username?: string;
  achieved_at?: IsoDateTime | null;
}

export interface ScoreboardHandlers {
  /** On (re)connect when the client's copy is stale; `entries` is the whole top. */
  onSnapshot?: (entries: BoardEntry[], msg: SnapshotMessage) => void;
  /** On every change; `entries` is the whole top after it, best first. */
  onDiff?: (entries: BoardEntry[], msg: DiffMessage) => void;
  onStatus?: (status: StatusEvent) => void;
  onError?: (msg: ErrorMessage) => void;
}

export interface MyScoreOptions {
  /** Default `all`. */
  period?: Period | null;
  onStatus?: (status: StatusEvent) => void;
  onError?: (msg: ErrorMessage) => void;
}

/** A live subscription: close it when done. */
export interface LiveHandle {
  close(): void;
  readonly status: ConnectionState;
}

/** A live board: its current top and the seq it is at. */
export interface LiveBoard extends LiveHandle {
  readonly entries: BoardEntry[];
  readonly seq: number | null;
}

/** The client. One per page or game; every socket it opens shares its token hook. */
export declare class Podium {
  constructor(options?: PodiumOptions);
  /** Without a trailing slash. */
  readonly baseUrl: string;
  /** The current access token; `refresh: true` asks the hook for a new one. */
  token(options?: { refresh?: boolean }): Promise<string | null>;
  /** An HTTP call under /api/v1: JSON in and out, `PodiumError` on failure, null on 204. */
  request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    options?: RequestOptions,
  ): Promise<T>;
  games(): Promise<Game[]>;
  actions(game: string): Promise<GameAction[]>;
  leaderboard(game: string, options?: { period?: Period; limit?: number }): Promise<LeaderboardPage>;
  rankOf(game: string, userId: number, options?: { period?: Period }): Promise<UserRank>;
  /** A score or an action, retried safely: one event id, counted once. */
  submit(options: SubmitOptions): Promise<ScoreResult>;
  /** The live top 10 of a board (`/ws/v1/scoreboard`), resynced after any gap. */
  scoreboard(game: string, period?: Period, handlers?: ScoreboardHandlers): LiveBoard;
  /** The caller's own rank on a game, live (`/ws/v1/my-score`; a user token). */
  myScore(game: string, onRank: (msg: RankMessage) => void, options?: MyScoreOptions): LiveHandle;
  /** Close every socket this client opened. */
  close(): void;
}

/** What `BoardState` takes: a snapshot or a diff, or a legacy `top` of `[user_id, score]`. */
export interface BoardUpdate {
  seq?: number;
  prev_seq?: number;
  entries?: (Partial<PageRow> & { user_id: number; score: number })[] | [number, number][];
  top?: [number, number][];
  upserts?: (Partial<Row> & { user_id: number })[];
  left?: number[];
}

/** The client's copy of a board's top: replaced by snapshots, patched by diffs. */
export declare class BoardState {
  constructor();
  entries: BoardEntry[];
  seq: number | null;
  snapshot(msg: SnapshotMessage | BoardUpdate): void;
  /** "applied", "stale" (not newer than held) or "gap" (resync from a snapshot). */
  diff(msg: DiffMessage | BoardUpdate): "applied" | "stale" | "gap";
}

export interface LiveSocketHandlers {
  onMessage: (msg: ServerMessage) => void;
  onStatus?: (status: StatusEvent) => void;
  /** A period rolled over (4010): the seq held says nothing about the new board. */
  onNewBoard?: () => void;
  /** The seq to resume from (`?since=`), or null for a snapshot. */
  since?: () => number | null;
}

/**
 * One logical WebSocket that survives drops: reconnects with backoff and jitter,
 * refreshes the token on 4001, resumes with `since`, renews the token before expiry.
 */
export declare class LiveSocket {
  constructor(
    client: Podium,
    path: string,
    params: Record<string, string>,
    handlers: LiveSocketHandlers,
  );
  readonly client: Podium;
  readonly path: string;
  readonly params: Record<string, string>;
  readonly status: ConnectionState;
  /** The open socket, null between connections. */
  readonly ws: WebSocket | null;
  /** Drop this connection and open a new one at once (resuming with `since`). */
  reconnectNow(): void;
  /** Send a message if the socket is open; false otherwise. */
  send(message: ClientMessage | SeedPageRequest | SeedReportRequest): boolean;
  close(): void;
}

/** Where a session keeps its refresh token (localStorage by default). */
export type TokenStorage = Pick<Storage, "getItem" | "setItem" | "removeItem">;

export interface PodiumSessionOptions {
  baseUrl?: string;
  /** Null keeps the refresh token in memory only. */
  storage?: TokenStorage | null;
  /** The storage key (default `podium.refresh`); also names the cross-tab lock. */
  key?: string;
}

/**
 * A logged-in user's tokens: the access token in memory, the refresh token in `storage`.
 * Refreshes are single-flight across tabs (refresh tokens rotate).
 */
export declare class PodiumSession {
  constructor(options?: PodiumSessionOptions);
  readonly baseUrl: string;
  readonly storage: TokenStorage | null | undefined;
  readonly key: string;
  /** The access token, null when logged out. */
  access: string | null;
  /** When the access token expires, ms since the epoch. */
  expiresAt: number;
  user: User | null;
  /** Called after every login, refresh and logout. */
  onChange: ((session: PodiumSession) => void) | null;
  readonly refreshToken: string | null;
  readonly loggedIn: boolean;
  register(account: { username: string; email: string; password: string }): Promise<User>;
  /** `login` is a username or an email address. */
  login(login: string, password: string): Promise<this>;
  /** Resume from the stored refresh token; false when there is none or it is dead. */
  resume(): Promise<boolean>;
  refresh(): Promise<this>;
  /** The `getToken` hook for `Podium` (bound: pass it as is). */
  getToken(options?: { refresh?: boolean }): Promise<string | null>;
  logout(): Promise<void>;
}
