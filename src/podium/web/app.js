// The page: log in, pick a board, watch it move, play. Uses podium.js for everything
// that talks to the server; this file only owns the DOM.

import { Podium, PodiumError, PodiumSession } from "./podium.js";

const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat();
const reduceMotion = matchMedia("(prefers-reduced-motion: reduce)");
const MOVE_MS = 450;
const PREFS_KEY = "podium.prefs";
const GLOBAL = { id: "global", name: "All games (overall)", policy: "none", order: "desc" };

const session = new PodiumSession();
const client = new Podium({ getToken: session.getToken });

const state = {
  games: [],
  game: null,
  period: "all",
  board: null, // the live scoreboard subscription
  me: null, // the live my-score subscription
  myRank: null,
  statuses: { board: "idle", me: "idle" },
  rows: new Map(), // user id → <li>, so updates patch rows and never rebuild the list
  actionsToken: 0,
};

// ---------- session ----------

function showAuth(message = "") {
  closeLive();
  state.rows.clear();
  $("board").replaceChildren();
  $("app").hidden = true;
  $("account").hidden = true;
  $("auth").hidden = false;
  $("login-error").textContent = message;
  setConn("idle");
  $("login-name").focus();
}

async function showApp() {
  $("auth").hidden = true;
  $("app").hidden = false;
  $("account").hidden = false;
  $("account-name").textContent = session.user?.username ?? "";
  await loadGames();
}

session.onChange = (s) => {
  if (!s.loggedIn && !$("app").hidden) showAuth("Your session has ended. Please log in again.");
};

// Logging out in another tab ends the session here too.
addEventListener("storage", (event) => {
  if (event.key === session.key && event.newValue === null && session.loggedIn) {
    session.access = null;
    session.user = null;
    showAuth("You logged out in another tab.");
  }
});

function fieldErrors(form, error) {
  const details = error instanceof PodiumError && error.details ? error.details : {};
  for (const input of form.querySelectorAll("input")) {
    const bad = Object.hasOwn(details, input.name);
    input.setAttribute("aria-invalid", String(bad));
  }
  if (error instanceof PodiumError) {
    const parts = Object.entries(details)
      .filter(([, v]) => typeof v === "string")
      .map(([k, v]) => `${k}: ${v}`);
    return parts.length ? `${error.message} (${parts.join("; ")})` : error.message;
  }
  return "Cannot reach the server. Check your connection and try again.";
}

async function busy(form, work) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await work();
  } finally {
    button.disabled = false;
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  busy(form, async () => {
    try {
      await session.login($("login-name").value.trim(), $("login-password").value);
      $("login-password").value = "";
      $("login-error").textContent = "";
      await showApp();
    } catch (error) {
      $("login-error").textContent = fieldErrors(form, error);
    }
  });
});

$("register-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const username = $("reg-username").value.trim();
  const password = $("reg-password").value;
  busy(form, async () => {
    try {
      await session.register({ username, email: $("reg-email").value.trim(), password });
      await session.login(username, password);
      form.reset();
      $("register-error").textContent = "";
      await showApp();
    } catch (error) {
      $("register-error").textContent = fieldErrors(form, error);
    }
  });
});

for (const radio of document.querySelectorAll("input[name=auth-mode]")) {
  radio.addEventListener("change", () => {
    const register = $("mode-register").checked;
    $("login-form").hidden = register;
    $("register-form").hidden = !register;
  });
}

$("logout").addEventListener("click", async () => {
  closeLive();
  await session.logout();
  showAuth();
});

// ---------- games and boards ----------

function loadPrefs() {
  try {
    return JSON.parse(localStorage.getItem(PREFS_KEY)) ?? {};
  } catch {
    return {};
  }
}

function savePrefs() {
  localStorage.setItem(PREFS_KEY, JSON.stringify({ game: state.game, period: state.period }));
}

async function loadGames() {
  let games;
  try {
    games = await client.games();
  } catch (error) {
    if (error instanceof PodiumError && error.status === 401) return; // session ended
    setResult(`Could not load the games: ${error.message}`, "error");
    setConn("offline");
    return;
  }
  state.games = [...games].sort((a, b) => String(a.name).localeCompare(String(b.name)));
  // The global board sums each player's values over every high-is-better game.
  if (state.games.some((g) => g.order === "desc")) state.games.push(GLOBAL);
  const select = $("game");
  select.replaceChildren(
    ...state.games.map((g) => new Option(g.name ?? g.id, g.id)),
  );
  const prefs = loadPrefs();
  const ids = state.games.map((g) => g.id);
  state.game = ids.includes(prefs.game) ? prefs.game : (ids[0] ?? null);
  state.period = ["all", "day", "week", "month"].includes(prefs.period) ? prefs.period : "all";
  select.value = state.game ?? "";
  $(`period-${state.period}`).checked = true;
  if (!state.game) {
    $("board-game").textContent = "no games yet";
    $("board-empty").hidden = false;
    $("board-empty").textContent = "No games exist yet. An admin can create one.";
    $("play-button").disabled = true;
    return;
  }
  subscribe();
}

$("game").addEventListener("change", (event) => {
  state.game = event.target.value;
  savePrefs();
  subscribe();
});

for (const radio of document.querySelectorAll("input[name=period]")) {
  radio.addEventListener("change", (event) => {
    state.period = event.target.value;
    savePrefs();
    subscribe();
  });
}

function currentGame() {
  return state.games.find((g) => g.id === state.game) ?? null;
}

function closeLive() {
  state.board?.close();
  state.me?.close();
  state.board = state.me = null;
  state.statuses = { board: "idle", me: "idle" };
}

function subscribe() {
  closeLive();
  const game = currentGame();
  // A different board: start from an empty list (updates to one board never empty it).
  state.rows.clear();
  $("board").replaceChildren();
  $("board").setAttribute("aria-busy", "true");
  $("board-empty").hidden = true;
  $("board-game").textContent = game?.name ?? state.game;
  $("board-meta").textContent = periodLabel(state.period);
  state.myRank = null;
  renderMe(null);
  setupPlay(game);

  state.board = client.scoreboard(state.game, state.period, {
    onSnapshot: (entries, msg) => renderBoard(entries, msg),
    onDiff: (entries, msg) => renderBoard(entries, msg),
    onStatus: (s) => socketStatus("board", s),
  });
  state.me = client.myScore(state.game, (msg) => renderMe(msg), {
    period: state.period,
    onStatus: (s) => socketStatus("me", s),
  });
}

function periodLabel(period) {
  return { all: "All time", day: "Today (UTC)", week: "This week (UTC)", month: "This month (UTC)" }[period];
}

// ---------- the live board: patch by user id, FLIP the moves ----------

function rowFor(entry) {
  const id = String(entry.user_id);
  let li = state.rows.get(id);
  if (!li) {
    li = $("row-template").content.firstElementChild.cloneNode(true);
    li.dataset.userId = id;
    li.classList.add("entering");
    li.addEventListener("animationend", () => li.classList.remove("entering"), { once: true });
    state.rows.set(id, li);
  }
  return li;
}

function flash(el, cls = "flash") {
  el.classList.remove(cls);
  void el.offsetWidth; // restart the animation when it is already running
  el.classList.add(cls);
}

const dateFmt = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" });

function boardMeta(msg) {
  const label = periodLabel(state.period);
  if (!msg?.period_start || state.period === "all") return label;
  const start = new Date(`${msg.period_start}T00:00:00Z`);
  return state.period === "day" ? `${label} · ${dateFmt.format(start)}` : `${label} · from ${dateFmt.format(start)}`;
}

function renderBoard(entries, msg) {
  if (msg?.type === "snapshot") $("board-meta").textContent = boardMeta(msg);
  const list = $("board");
  const myId = String(session.user?.id ?? "");
  // First: where every row is now.
  const before = new Map();
  const oldRank = new Map();
  for (const li of list.children) {
    before.set(li.dataset.userId, li.getBoundingClientRect().top);
    oldRank.set(li.dataset.userId, Number(li.dataset.rank));
  }
  const keep = new Set(entries.map((e) => String(e.user_id)));
  for (const [id, li] of state.rows) {
    if (!keep.has(id)) {
      li.remove();
      state.rows.delete(id);
    }
  }
  // Patch each row in place and put it at its index; moving a node keeps it (no blink).
  entries.forEach((entry, index) => {
    const li = rowFor(entry);
    const id = li.dataset.userId;
    const score = fmt.format(entry.score);
    const scoreEl = li.querySelector(".score");
    if (scoreEl.textContent !== score) {
      const had = scoreEl.textContent !== "";
      scoreEl.textContent = score;
      if (had) flash(scoreEl);
    }
    li.querySelector(".rank").textContent = String(entry.rank);
    li.dataset.rank = String(entry.rank);
    li.querySelector(".name-text").textContent = entry.username ?? entry.player ?? `Player ${id}`;
    li.setAttribute(
      "aria-label",
      `Rank ${entry.rank}: ${entry.username ?? `player ${id}`}, ${score} points`,
    );
    const mine = id === myId;
    li.classList.toggle("mine", mine);
    const badge = li.querySelector(".you-badge");
    if (mine && !badge) {
      const b = document.createElement("span");
      b.className = "you-badge";
      b.textContent = "you";
      li.querySelector(".name").append(b);
    } else if (!mine && badge) {
      badge.remove();
    }
    const was = oldRank.get(id);
    if (was && was !== entry.rank) {
      li.classList.remove("up", "down");
      flash(li, entry.rank < was ? "up" : "down");
    }
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] ?? null);
  });
  // Last, Invert, Play: each moved row starts where it was and glides to its place.
  if (!reduceMotion.matches) {
    for (const li of list.children) {
      const top = before.get(li.dataset.userId);
      if (top === undefined) continue;
      const dy = top - li.getBoundingClientRect().top;
      if (Math.abs(dy) < 1) continue;
      li.animate([{ transform: `translateY(${dy}px)` }, { transform: "translateY(0)" }], {
        duration: MOVE_MS,
        easing: "cubic-bezier(0.2, 0.8, 0.2, 1)",
      });
    }
  }
  list.setAttribute("aria-busy", "false");
  $("board-empty").hidden = entries.length > 0;
}

// ---------- you ----------

function setStat(id, text) {
  const el = $(id);
  if (el.textContent !== text) {
    const had = el.textContent !== "–" && el.textContent !== "";
    el.textContent = text;
    if (had) flash(el);
  }
}

function renderMe(msg) {
  if (!msg) {
    for (const id of ["me-rank", "me-score", "me-total"]) $(id).textContent = "–";
    $("me-note").textContent = "";
    return;
  }
  if (msg.game !== undefined && msg.game !== state.game) return;
  const ranked = msg.rank !== null && msg.rank !== undefined;
  setStat("me-rank", ranked ? `#${fmt.format(msg.rank)}` : "–");
  setStat("me-score", msg.score !== null && msg.score !== undefined ? fmt.format(msg.score) : "–");
  setStat("me-total", msg.total !== undefined && msg.total !== null ? fmt.format(msg.total) : "–");
  $("me-note").textContent = ranked
    ? msg.rank <= 10
      ? "You are in the top 10."
      : `${fmt.format(msg.rank - 10)} place${msg.rank === 11 ? "" : "s"} from the top 10.`
    : "No score on this board yet.";
  if (ranked && state.myRank !== null && msg.rank !== state.myRank) {
    const how = msg.rank < state.myRank ? "up" : "down";
    announce(`You moved ${how} to rank ${msg.rank}.`);
  }
  state.myRank = ranked ? msg.rank : null;
}

function announce(text) {
  $("announcer").textContent = text;
}

// ---------- play ----------

async function setupPlay(game) {
  const token = ++state.actionsToken;
  const policy = game?.policy ?? "client";
  const actionField = $("play-action-field");
  const scoreField = $("play-score-field");
  const note = $("play-note");
  const button = $("play-button");
  actionField.hidden = scoreField.hidden = note.hidden = true;
  button.disabled = false;
  setResult("");
  if (policy === "none") {
    note.hidden = false;
    note.textContent = "The overall board adds up your scores in every game where higher is better. Pick a game to play.";
    button.textContent = "Do an action";
    button.disabled = true;
  } else if (policy === "actions") {
    actionField.hidden = false;
    button.textContent = "Do an action";
    const select = $("play-action");
    select.replaceChildren(new Option("Loading…", ""));
    button.disabled = true;
    let actions = [];
    try {
      actions = await client.actions(game.id);
    } catch (error) {
      if (token === state.actionsToken) setResult(`Could not load actions: ${error.message}`, "error");
      return;
    }
    if (token !== state.actionsToken) return;
    select.replaceChildren(
      ...actions.map((a) => new Option(`${a.action} (${a.points > 0 ? "+" : ""}${fmt.format(a.points)})`, a.action)),
    );
    button.disabled = actions.length === 0;
    if (!actions.length) setResult("This game has no actions yet.", "error");
  } else if (policy === "authoritative") {
    note.hidden = false;
    note.textContent = "Scores on this game come from the game's own servers.";
    button.textContent = "Do an action";
    button.disabled = true;
  } else {
    scoreField.hidden = false;
    button.textContent = "Submit score";
    const input = $("play-score");
    if (game?.min_score !== undefined && game.min_score !== null) input.min = game.min_score;
    else input.removeAttribute("min");
    if (game?.max_score !== undefined && game.max_score !== null) input.max = game.max_score;
    else input.removeAttribute("max");
  }
}

function setResult(text, kind = "") {
  const el = $("play-result");
  el.textContent = text;
  el.className = `result ${kind}`.trim();
}

$("play-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const game = currentGame();
  if (!game) return;
  const payload = { game: game.id };
  if (game.policy === "actions") {
    payload.action = $("play-action").value;
  } else {
    const raw = $("play-score").value.trim();
    if (!/^-?\d+$/.test(raw)) {
      $("play-score").setAttribute("aria-invalid", "true");
      setResult("Enter a whole number.", "error");
      $("play-score").focus();
      return;
    }
    $("play-score").setAttribute("aria-invalid", "false");
    payload.score = Number(raw);
  }
  setResult("Sending…");
  busy(event.currentTarget, async () => {
    try {
      const ack = await client.submit(payload);
      showAck(ack);
    } catch (error) {
      setResult(error instanceof PodiumError ? error.message : "Cannot reach the server; try again.", "error");
    }
  });
});

function showAck(ack) {
  const delta = ack.delta ?? 0;
  const sign = delta > 0 ? "+" : delta < 0 ? "−" : "±";
  const parts = [`${sign}${fmt.format(Math.abs(delta))}`, `score ${fmt.format(ack.score)}`];
  if (ack.rank) parts.push(`rank #${fmt.format(ack.rank)}`);
  if (ack.previous_rank && ack.rank && ack.previous_rank !== ack.rank) {
    parts.push(ack.rank < ack.previous_rank ? `up from #${ack.previous_rank}` : `down from #${ack.previous_rank}`);
  }
  setResult(parts.join(" · ") + (ack.duplicate ? " (already counted)" : ""), "ok");
  // The ack is the all-time board: show it at once there; other periods follow my-score.
  if (state.period === "all" && ack.game === state.game) {
    renderMe({ rank: ack.rank, score: ack.score, total: ack.total ?? shownTotal() });
  }
}

function shownTotal() {
  const text = $("me-total").textContent.replace(/\D/g, "");
  return text ? Number(text) : null;
}

// ---------- connection indicator ----------

function socketStatus(which, s) {
  state.statuses[which] = s.status;
  if (s.status === "unauthorized") {
    showAuth("Your session has ended. Please log in again.");
    return;
  }
  if (s.status === "closed" && s.code === 4003) {
    // Revoked. With no refresh token left, this browser logged out (in another tab);
    // otherwise try a refresh, which fails and ends the session if it was revoked too.
    if (!session.refreshToken) showAuth("You logged out in another tab.");
    else session.refresh().then(subscribe, () => {});
    return;
  }
  const all = Object.values(state.statuses);
  if (all.every((x) => x === "open")) setConn("live");
  else if (all.some((x) => x === "reconnecting")) setConn("reconnecting", s.delay);
  else if (all.some((x) => x === "connecting")) setConn("connecting");
  else if (all.some((x) => x === "closed")) setConn("offline");
}

function setConn(kind, delay) {
  const text = {
    idle: "Not connected",
    connecting: "Connecting…",
    live: "Live",
    reconnecting: delay ? `Reconnecting in ${Math.ceil(delay / 1000)} s…` : "Reconnecting…",
    offline: "Offline",
  }[kind];
  $("conn").dataset.state = kind;
  $("conn-text").textContent = text;
}

// ---------- start ----------

async function start() {
  let resumed = false;
  let message = "";
  try {
    resumed = await session.resume();
  } catch {
    message = "Cannot reach the server right now. Reload in a moment, or log in again.";
  }
  if (resumed) await showApp();
  else showAuth(message);
  document.documentElement.dataset.ready = "true";
}

start();
