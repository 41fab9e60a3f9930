// podium.js — a small client for Podium: HTTP calls, live boards over WebSocket,
// safe score submission. An ES module with no dependencies and no build step.
//
//   import { Podium } from "/static/podium.js";
//   const client = new Podium({ baseUrl: "https://podium.example", getToken });
//   client.scoreboard("chess", "week", { onSnapshot, onDiff, onStatus });
//   client.myScore("chess", (me) => console.log(me.rank, me.score));
//   await client.submit({ game: "chess", action: "win" });
//
// `getToken({ refresh })` returns an access token; with `refresh: true` it must get a
// fresh one (the client asks when a socket closes with 4001 or a call answers 401).
// `PodiumSession` below is such a hook, backed by the auth API and a refresh token.
//
// Also the npm package @podium/client (this directory): podium.d.ts declares every
// export, and the JSDoc types here name those declarations so `tsc` checks this file
// against them (`npm run check`).

/**
 * @typedef {import("./podium.js").BoardEntry} BoardEntry
 * @typedef {import("./podium.js").BoardUpdate} BoardUpdate
 * @typedef {import("./podium.js").ClientMessage} ClientMessage
 * @typedef {import("./podium.js").ConnectionState} ConnectionState
 * @typedef {import("./podium.js").Game} Game
 * @typedef {import("./podium.js").GameAction} GameAction
 * @typedef {import("./podium.js").LeaderboardPage} LeaderboardPage
 * @typedef {import("./podium.js").LiveBoard} LiveBoard
 * @typedef {import("./podium.js").LiveHandle} LiveHandle
 * @typedef {import("./podium.js").LiveSocketHandlers} LiveSocketHandlers
 * @typedef {import("./podium.js").MyScoreOptions} MyScoreOptions
 * @typedef {import("./podium.js").PodiumOptions} PodiumOptions
 * @typedef {import("./podium.js").Period} Period
 * @typedef {import("./podium.js").PodiumSessionOptions} PodiumSessionOptions
 * @typedef {import("./podium.js").RankMessage} RankMessage
 * @typedef {import("./podium.js").RequestOptions} RequestOptions
 * @typedef {import("./podium.js").ScoreboardHandlers} ScoreboardHandlers
 * @typedef {import("./podium.js").ScoreResult} ScoreResult
 * @typedef {import("./podium.js").SeedPageRequest} SeedPageRequest
 * @typedef {import("./podium.js").SeedReportRequest} SeedReportRequest
 * @typedef {import("./podium.js").StatusEvent} StatusEvent
 * @typedef {import("./podium.js").SubmitOptions} SubmitOptions
 * @typedef {import("./podium.js").TokenHook} TokenHook
 * @typedef {import("./podium.js").TokenPair} TokenPair
 * @typedef {import("./podium.js").TokenStorage} TokenStorage
 * @typedef {import("./podium.js").User} User
 * @typedef {import("./podium.js").UserRank} UserRank
 * @typedef {import("./podium.js").Podium} DeclaredPodium
 * @typedef {import("./podium.js").PodiumError} DeclaredPodiumError
 * @typedef {import("./podium.js").BoardState} DeclaredBoardState
 * @typedef {import("./podium.js").LiveSocket} DeclaredLiveSocket
 * @typedef {import("./podium.js").PodiumSession} DeclaredPodiumSession
 */

/** Close codes after which reconnecting cannot help (see docs/protocol.md). */
const FINAL_CLOSE_CODES = new Set([1000, 1003, 1007, 1008, 1009, 4003, 4008, 4030]);
const TOKEN_EXPIRED = 4001;
const PERIOD_ENDED = 4010;

/**
 * An error answered by the API: `status`, `code`, `message`, `details`.
 * @implements {DeclaredPodiumError}
 */
export class PodiumError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {unknown} [details]
   */
  constructor(status, code, message, details = null) {
    super(message);
    this.name = "PodiumError";
    this.status = status;
    this.code = code;
    this.details = details;
    /** @type {number | null | undefined} */
    this.retryAfter = undefined;
  }
}

/**
 * A random (v4) UUID, also outside secure contexts where crypto.randomUUID is absent.
 * @type {typeof import("./podium.js").uuid4}
 */
export function uuid4() {
  if (typeof globalThis.crypto?.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Exponential backoff with jitter: attempt 0 → ~0.5 s, capped at `cap` ms.
 * @type {typeof import("./podium.js").backoff}
 */
export function backoff(attempt, base = 500, cap = 15000) {
  const ceiling = Math.min(cap, base * 2 ** attempt);
  // "Equal jitter": never zero (no hammering), never in lockstep with other clients.
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * @param {string} token
 * @returns {{ exp?: number, iat?: number } | null}
 */
function tokenClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch {
    return null; // not a JWT (e.g. a service credential): let the server judge
  }
}

/**
 * When (ms since epoch) a token should be renewed: shortly before it expires.
 * @param {string} token
 */
function renewAt(token) {
  const claims = tokenClaims(token);
  if (!claims?.exp) return Infinity;
  const lifetime = claims.iat ? (claims.exp - claims.iat) * 1000 : 120000;
  // 25 s ahead, or a quarter of the lifetime for short-lived tokens (never a loop).
  return claims.exp * 1000 - Math.min(25000, lifetime / 4);
}

/**
 * The client. One per page or game; every socket it opens shares its token hook.
 * @implements {DeclaredPodium}
 */
export class Podium {
  /** @param {PodiumOptions} [options] */
  constructor({ baseUrl = globalThis.location?.origin, token = null, getToken = null } = {}) {
    if (!baseUrl) throw new Error("Podium: baseUrl is required outside a browser page");
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    /** @type {string | null} */
    this._token = token;
    /** @type {TokenHook | null} */
    this._getToken = getToken;
    /** @type {Set<LiveSocket>} */
    this._sockets = new Set();
  }

  /**
   * The current access token; `refresh: true` asks the hook for a new one.
   * @param {{ refresh?: boolean }} [options]
   * @returns {Promise<string | null>}
   */
  async token({ refresh = false } = {}) {
    if (this._getToken) {
      this._token = await this._getToken({ refresh });
    }
    return this._token;
  }

  /**
   * An HTTP call under /api/v1; JSON in and out, PodiumError on failure.
   * @template [T=unknown]
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {RequestOptions} [options]
   * @returns {Promise<T>}
   */
  async request(method, path, body = undefined, { auth = true, retried = false } = {}) {
    /** @type {Record<string, string>} */
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (auth) {
      const token = await this.token();
      if (token) headers.authorization = `Bearer ${token}`;
    }
    const response = await fetch(`${this.baseUrl}/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401 && auth && this._getToken && !retried) {
      await this.token({ refresh: true });
      return this.request(method, path, body, { auth, retried: true });
    }
    if (response.status === 204) return /** @type {T} */ (null);
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const e = data?.error ?? {};
      const error = new PodiumError(
        response.status,
        e.code ?? "http_error",
        e.message ?? `HTTP ${response.status}`,
        e.details ?? null,
      );
      error.retryAfter = Number(response.headers.get("retry-after")) || null;
      throw error;
    }
    return data;
  }

  /** @returns {Promise<Game[]>} */
  games() {
    return this.request("GET", "/games").then(
      (body) => /** @type {{ games: Game[] }} */ (body).games ?? body,
    );
  }

  /**
   * @param {string} game
   * @returns {Promise<GameAction[]>}
   */
  actions(game) {
    return this.request("GET", `/games/${encodeURIComponent(game)}/actions`).then(
      (body) => /** @type {{ actions: GameAction[] }} */ (body).actions ?? body,
    );
  }

  /**
   * @param {string} game
   * @param {{ period?: Period, limit?: number }} [options]
   * @returns {Promise<LeaderboardPage>}
   */
  leaderboard(game, { period = "all", limit = 10 } = {}) {
    const q = new URLSearchParams({ period, limit: String(limit) });
    return this.request("GET", `/leaderboards/${encodeURIComponent(game)}?${q}`);
  }

  /**
   * @param {string} game
   * @param {number} userId
   * @param {{ period?: Period }} [options]
   * @returns {Promise<UserRank>}
   */
  rankOf(game, userId, { period = "all" } = {}) {
    const q = new URLSearchParams({ period });
    return this.request("GET", `/leaderboards/${encodeURIComponent(game)}/users/${userId}?${q}`);
  }

  /**
   * Submit a score or an action: `{game, score}` or `{game, action}`. The event id is
   * made once, so a retry after a lost answer never counts twice (the server replies
   * with the first result and `duplicate: true`). Retries network errors, 429 and 5xx.
   * @param {SubmitOptions} options
   * @returns {Promise<ScoreResult>}
   */
  async submit({ game, score, action, eventId = uuid4(), retries = 4 }) {
    /** @type {{ game: string, event_id: string, score?: number, action?: string }} */
    const body = { game, event_id: eventId };
    if (action !== undefined && action !== null) body.action = action;
    else body.score = score;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.request("POST", "/scores", body);
      } catch (error) {
        const retryable =
          !(error instanceof PodiumError) || error.status === 429 || error.status >= 500;
        if (!retryable || attempt >= retries) throw error;
        const retryAfter = error instanceof PodiumError ? error.retryAfter : null;
        await sleep(retryAfter ? retryAfter * 1000 : backoff(attempt, 250, 4000));
      }
    }
  }

  /**
   * The live top 10 of a board. `onSnapshot(entries, msg)` on (re)connect when the
   * client's copy is stale, `onDiff(entries, msg)` on every change (entries is the whole
   * top after the change, best first), `onStatus(status)` on connection changes.
   * Returns `{close(), entries, seq}`.
   * @param {string} game
   * @param {Period} [period]
   * @param {ScoreboardHandlers} [handlers]
   * @returns {LiveBoard}
   */
  scoreboard(game, period = "all", { onSnapshot, onDiff, onStatus, onError } = {}) {
    const board = new BoardState();
    const live = new LiveSocket(this, "/ws/v1/scoreboard", { game, period }, {
      since: () => board.seq,
      onNewBoard: () => {
        board.seq = null; // resume without `since`: the server sends a snapshot
      },
      onStatus,
      onMessage: (msg) => {
        if (msg.type === "snapshot") {
          board.snapshot(msg);
          onSnapshot?.(board.entries, msg);
        } else if (msg.type === "diff") {
          const result = board.diff(msg);
          if (result === "applied") onDiff?.(board.entries, msg);
          // A missed push: reconnect with `since`, and the server answers with a snapshot.
          else if (result === "gap") live.reconnectNow();
        } else if (msg.type === "error") {
          onError?.(msg);
        }
      },
    });
    return {
      close: () => live.close(),
      get entries() {
        return board.entries;
      },
      get seq() {
        return board.seq;
      },
      get status() {
        return live.status;
      },
    };
  }

  /**
   * The caller's own `{rank, score, total, ...}` on a game, live. Returns `{close()}`.
   * @param {string} game
   * @param {(msg: RankMessage) => void} onRank
   * @param {MyScoreOptions} [options]
   * @returns {LiveHandle}
   */
  myScore(game, onRank, { period = null, onStatus, onError } = {}) {
    /** @type {Record<string, string>} */
    const params = period ? { game, period } : { game };
    const live = new LiveSocket(this, "/ws/v1/my-score", params, {
      onStatus,
      onMessage: (msg) => {
        if (msg.type === "rank") onRank(msg);
        else if (msg.type === "error") onError?.(msg);
      },
    });
    return { close: () => live.close(), get status() { return live.status; } };
  }

  /** Close every socket this client opened. */
  close() {
    for (const socket of [...this._sockets]) socket.close();
  }
}

/**
 * The client's copy of a board's top: replaced by snapshots, patched by diffs.
 * @implements {DeclaredBoardState}
 */
export class BoardState {
  constructor() {
    /** @type {BoardEntry[]} */
    this.entries = [];
    /** @type {number | null} */
    this.seq = null;
  }

  /** @param {BoardUpdate} msg */
  snapshot(msg) {
    this.entries = normalise(msg.entries ?? msg.top ?? []);
    this.seq = msg.seq ?? null;
  }

  /**
   * Apply a diff: "applied", "stale" (not newer than what we hold) or "gap" (it starts
   * from a seq we never saw: the caller must resync from a snapshot).
   * @param {BoardUpdate} msg
   * @returns {"applied" | "stale" | "gap"}
   */
  diff(msg) {
    if (this.seq !== null && msg.seq !== undefined && msg.seq <= this.seq) return "stale";
    if (msg.prev_seq !== undefined && msg.prev_seq !== this.seq) return "gap";
    const whole = msg.entries ?? msg.top;
    if (whole) {
      this.entries = normalise(whole);
    } else {
      const byId = new Map(this.entries.map((e) => [e.user_id, e]));
      for (const id of msg.left ?? []) byId.delete(id);
      for (const e of msg.upserts ?? []) {
        // An upsert of a row we never held is a whole row (the server sends whole rows).
        byId.set(e.user_id, /** @type {BoardEntry} */ ({ ...byId.get(e.user_id), ...e }));
      }
      this.entries = normalise([...byId.values()]);
    }
    this.seq = msg.seq ?? this.seq;
    return "applied";
  }
}

/**
 * @param {NonNullable<BoardUpdate["entries"]>} entries
 * @returns {BoardEntry[]}
 */
function normalise(entries) {
  // Ranks are filled in below when the rows came without them.
  const rows = /** @type {BoardEntry[]} */ (
    entries.map((e) =>
      Array.isArray(e) ? { user_id: e[0], score: e[1] } : { ...e, user_id: e.user_id },
    )
  );
  if (rows.every((e) => typeof e.rank === "number")) rows.sort((a, b) => a.rank - b.rank);
  else rows.forEach((e, i) => (e.rank = i + 1));
  return rows;
}

/**
 * One logical WebSocket that survives drops: reconnects with backoff and jitter,
 * refreshes the token on 4001, resumes with `since` when the caller gives one.
 * @implements {DeclaredLiveSocket}
 */
export class LiveSocket {
  /**
   * @param {Podium} client
   * @param {string} path
   * @param {Record<string, string>} params
   * @param {LiveSocketHandlers} handlers
   */
  constructor(client, path, params, { onMessage, onStatus, onNewBoard, since = () => null }) {
    this.client = client;
    this.onNewBoard = onNewBoard;
    this.path = path;
    this.params = params;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.since = since;
    /** @type {ConnectionState} */
    this.status = "connecting";
    this.attempt = 0;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.renewTimer = undefined;
    this.closed = false;
    this.refreshNext = false;
    this.refreshedInRun = false;
    // Back online, or a phone's tab shown again: don't sit out the rest of a backoff.
    this._online = () => {
      if (this.timer !== null && globalThis.document?.visibilityState !== "hidden") {
        this._connectSoon(0);
      }
    };
    globalThis.addEventListener?.("online", this._online);
    globalThis.document?.addEventListener("visibilitychange", this._online);
    client._sockets.add(this);
    this._connect();
  }

  /** @param {string | null} token */
  _url(token) {
    const url = new URL(this.path, this.client.baseUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    for (const [key, value] of Object.entries(this.params)) url.searchParams.set(key, value);
    const since = this.since();
    if (since !== null && since !== undefined) url.searchParams.set("since", String(since));
    return { url: url.toString(), token };
  }

  /**
   * @param {ConnectionState} status
   * @param {Partial<StatusEvent>} [extra]
   */
  _setStatus(status, extra = {}) {
    this.status = status;
    this.onStatus?.({ status, attempt: this.attempt, ...extra });
  }

  async _connect() {
    this.timer = null;
    if (this.closed) return;
    this._setStatus(this.attempt === 0 ? "connecting" : "reconnecting");
    let token;
    try {
      let refresh = this.refreshNext;
      token = await this.client.token();
      // Don't open a socket with a token that is about to die.
      if (token && Date.now() >= renewAt(token)) refresh = true;
      if (refresh) token = await this.client.token({ refresh: true });
      this.refreshNext = false;
    } catch (error) {
      if (error instanceof PodiumError && error.status === 401) {
        this.closed = true;
        this._setStatus("unauthorized", { error });
        return;
      }
      this._retry();
      return;
    }
    if (this.closed) return;
    const { url } = this._url(token);
    // Browsers cannot set headers on a WebSocket; the token rides in the subprotocol.
    const ws = token ? new WebSocket(url, ["bearer", token]) : new WebSocket(url);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.attempt = 0;
      this.refreshedInRun = false;
      this._setStatus("open");
      this._scheduleRenewal(token);
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.renewTimer);
      if (this.closed) return;
      if (FINAL_CLOSE_CODES.has(event.code)) {
        this.closed = true;
        this._setStatus("closed", { code: event.code, reason: event.reason });
        return;
      }
      if (event.code === TOKEN_EXPIRED) this.refreshNext = true;
      // A new day/week/month is a new board: its seqs say nothing about the old one's.
      if (event.code === PERIOD_ENDED) this.onNewBoard?.();
      // A refused handshake looks like 1006 before open; the token may be the cause.
      // Try a fresh one once per run of failures, not on every retry.
      if (!opened && this.attempt >= 1 && !this.refreshedInRun) {
        this.refreshNext = true;
        this.refreshedInRun = true;
      }
      this._retry(event.code);
    };
  }

  /** @param {number | null} [code] */
  _retry(code = null) {
    const delay = backoff(this.attempt);
    this.attempt += 1;
    this._setStatus("reconnecting", { delay, code });
    this._connectSoon(delay);
  }

  /** @param {number} delay */
  _connectSoon(delay) {
    clearTimeout(this.timer ?? undefined);
    this.timer = setTimeout(() => this._connect(), delay);
  }

  /** Drop this connection and open a new one at once (resuming with `since`). */
  reconnectNow() {
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000);
    if (!this.closed) this._connectSoon(0);
  }

  // Before the socket's token expires, hand it a fresh one (`auth` message) so the
  // server need not close it with 4001 and the board never has to resync.
  /** @param {string | null} token */
  _scheduleRenewal(token) {
    clearTimeout(this.renewTimer);
    if (!this.client._getToken || !token) return;
    const wait = renewAt(token) - Date.now();
    if (!Number.isFinite(wait)) return;
    this.renewTimer = setTimeout(async () => {
      try {
        let fresh = await this.client.token();
        if (fresh === token) fresh = await this.client.token({ refresh: true });
        if (fresh && this.send({ type: "auth", token: fresh })) this._scheduleRenewal(fresh);
      } catch {
        // Left to the 4001 close: the reconnect path refreshes and resumes.
      }
    }, Math.max(0, wait));
  }

  /**
   * Send a JSON message if the socket is open; false otherwise.
   * @param {ClientMessage | SeedPageRequest | SeedReportRequest} message
   */
  send(message) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer ?? undefined);
    clearTimeout(this.renewTimer);
    this.timer = null;
    globalThis.removeEventListener?.("online", this._online);
    globalThis.document?.removeEventListener("visibilitychange", this._online);
    this.client._sockets.delete(this);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    this._setStatus("closed");
  }
}

/**
 * A logged-in user's tokens: the access token in memory, the refresh token in
 * `storage` (localStorage by default) so a reload keeps the session. Its `getToken`
 * is the hook `Podium` wants; refreshes are single-flight (refresh tokens rotate, and
 * spending one twice would revoke the whole session).
 * @implements {DeclaredPodiumSession}
 */
export class PodiumSession {
  /** @param {PodiumSessionOptions} [options] */
  constructor({ baseUrl = globalThis.location?.origin, storage = globalThis.localStorage, key = "podium.refresh" } = {}) {
    if (!baseUrl) throw new Error("PodiumSession: baseUrl is required outside a browser page");
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    /** @type {TokenStorage | null | undefined} */
    this.storage = storage;
    this.key = key;
    /** @type {string | null} */
    this.access = null;
    this.expiresAt = 0;
    this.renewAfter = 0;
    /** @type {User | null} */
    this.user = null;
    /** @type {Promise<this> | null} */
    this._refreshing = null;
    /** @type {((session: DeclaredPodiumSession) => void) | null} */
    this.onChange = null;
    this.getToken = this.getToken.bind(this);
  }

  get refreshToken() {
    return this.storage?.getItem(this.key) ?? null;
  }

  get loggedIn() {
    return this.access !== null;
  }

  /**
   * @param {string} path
   * @param {unknown} body
   * @param {string | null} [token]
   * @returns {Promise<any>}
   */
  async _post(path, body, token = null) {
    /** @type {Record<string, string>} */
    const headers = { "content-type": "application/json", accept: "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(`${this.baseUrl}/api/v1${path}`, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const e = data?.error ?? {};
      throw new PodiumError(response.status, e.code ?? "http_error", e.message ?? `HTTP ${response.status}`, e.details ?? null);
    }
    return data;
  }

  /** @param {TokenPair} pair */
  _accept(pair) {
    this.access = pair.access_token;
    this.expiresAt = Date.now() + pair.expires_in * 1000;
    this.renewAfter = this.expiresAt - Math.min(30000, (pair.expires_in * 1000) / 4);
    this.user = pair.user;
    this.storage?.setItem(this.key, pair.refresh_token);
    this.onChange?.(this);
    return this;
  }

  _forget() {
    const had = this.access !== null || this.refreshToken !== null;
    this.access = null;
    this.user = null;
    this.storage?.removeItem(this.key);
    if (had) this.onChange?.(this);
  }

  /**
   * @param {{ username: string, email: string, password: string }} account
   * @returns {Promise<User>}
   */
  register({ username, email, password }) {
    return this._post("/auth/register", { username, email, password });
  }

  /**
   * @param {string} login
   * @param {string} password
   */
  async login(login, password) {
    const body = login.includes("@") ? { email: login, password } : { username: login, password };
    return this._accept(await this._post("/auth/login", body));
  }

  /** Resume from the stored refresh token; false when there is none or it is dead. */
  async resume() {
    if (!this.refreshToken) return false;
    try {
      await this.refresh();
      return true;
    } catch (error) {
      if (error instanceof PodiumError) return false;
      throw error; // offline: keep the refresh token for the next try
    }
  }

  /** @returns {Promise<this>} */
  refresh() {
    if (!this._refreshing) {
      // Refresh tokens rotate and spending one twice revokes the session, so tabs take
      // turns (Web Locks) and each spends whatever token is stored when its turn comes.
      const run = () => this._refresh();
      const locked = globalThis.navigator?.locks
        ? navigator.locks.request(`${this.key}.lock`, run)
        : run();
      this._refreshing = locked.finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  async _refresh() {
    const token = this.refreshToken;
    if (!token) {
      this._forget();
      throw new PodiumError(401, "unauthorized", "not logged in");
    }
    try {
      return this._accept(await this._post("/auth/refresh", { refresh_token: token }));
    } catch (error) {
      if (error instanceof PodiumError && error.status === 401) this._forget();
      throw error;
    }
  }

  /**
   * The `getToken` hook for `Podium`.
   * @param {{ refresh?: boolean }} [options]
   * @returns {Promise<string | null>}
   */
  async getToken({ refresh = false } = {}) {
    if (refresh || !this.access || Date.now() >= this.renewAfter) await this.refresh();
    return this.access;
  }

  async logout() {
    const token = this.access;
    this._forget();
    if (token) {
      try {
        await this._post("/auth/logout", {}, token);
      } catch {
        // Already expired or offline: the tokens are gone from this browser either way.
      }
    }
  }
}
