// The cockpit: draws the snapshot, then follows /v1/stream.
//
// Everything shown comes from the hub: GET /v1/cockpit/snapshot once (and
// again on `resync`), then the stream's items after the snapshot's cursor.
// An item at or before the cursor already applied is ignored, so a
// reconnect (the browser sends Last-Event-ID) shows every change once.
// Text from departments is only ever set as text, never as markup.
//
// With principals configured the hub answers nothing without a session:
// the page asks GET /v1/session, shows the sign-in form when there is
// none, and after POST /v1/session (an HttpOnly cookie it never sees)
// starts. When the session ends (signed out, expired) the stream stops
// and the form comes back.

import { t } from "./i18n.js";

const $ = (sel) => document.querySelector(sel);
const body = document.body;
const FEED_MAX = 200;
const RANK = { info: 0, minor: 1, major: 2, critical: 3 };
const LEVELS = ["sub-grid", "community", "street"];

const params = new URLSearchParams(location.search);
const state = {
  lang: params.get("lang") === "en" ? "en" : "zh",
  kiosk: params.get("kiosk") === "1",
  filter: {
    grid: params.get("grid") || "",
    category: params.get("category") || "",
    severity: params.get("severity") || "",
    case: params.get("case") || "",
  },
  paused: false,
  waiting: [],
  cursor: 0,
  cases: new Map(),
  events: [],
  dead: new Map(),
  adapters: [],
  figures: null,
  nowMs: Date.now(),
  nowAt: performance.now(),
  manual: false,
  tz: body.dataset.tz || "Asia/Shanghai",
  source: null,
  conn: "connecting",
  names: new Map(),
  // Who is signed in (GET /v1/session), or {auth: "off"}.
  who: null,
  started: false,
};

for (const p of document.querySelectorAll("#map [data-grid]")) {
  state.names.set(p.dataset.grid, { zh: p.dataset.name, en: p.dataset.nameEn });
}

// ---------- small helpers ----------

/** Replaces `parent`'s children, skipping the absent ones (the DOM's own
 * replaceChildren would print `null`). */
function fill(parent, ...children) {
  parent.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const tr = (key, vars) => t(state.lang, key, vars);

function hubNow() {
  return state.manual ? state.nowMs : state.nowMs + (performance.now() - state.nowAt);
}

function timeText(ms, withDate = false) {
  if (ms === null || ms === undefined) return "—";
  const opts = { timeZone: state.tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  if (withDate) Object.assign(opts, { month: "2-digit", day: "2-digit" });
  return new Intl.DateTimeFormat(state.lang === "en" ? "en-GB" : "zh-CN", opts).format(new Date(ms));
}

function timeEl(ms, withDate = false) {
  const iso = ms === null || ms === undefined ? "" : new Date(ms).toISOString();
  return el("time", { datetime: iso, title: iso, text: timeText(ms, withDate) });
}

function eventTime(ev) {
  const ms = Date.parse(ev.time || "");
  return Number.isNaN(ms) ? null : ms;
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(sec).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function gridName(code) {
  if (!code) return tr("unknown_grid");
  const n = state.names.get(code);
  return n ? (state.lang === "en" ? n.en || n.zh : n.zh) : code;
}

function within(code, prefix) {
  return !prefix || (code || "") === prefix || (code || "").startsWith(prefix + "/");
}

function percent(x) {
  return x === null || x === undefined ? "—" : `${Math.round(x * 100)}%`;
}

// ---------- URL state ----------

function writeUrl() {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(state.filter)) if (v) p.set(k, v);
  if (state.lang === "en") p.set("lang", "en");
  if (state.kiosk) p.set("kiosk", "1");
  const q = p.toString();
  history.replaceState(null, "", q ? `?${q}` : location.pathname);
}

function caseMatches(c) {
  const f = state.filter;
  return within(c.grid, f.grid)
    && (!f.category || within((c.category || "").replaceAll(".", "/"), f.category.replaceAll(".", "/")))
    && (!f.severity || (RANK[c.severity] ?? 0) >= (RANK[f.severity] ?? 0));
}

function eventMatches(ev) {
  const f = state.filter;
  return within(placeOf(ev), f.grid)
    && (!f.category || within((ev.category || "").replaceAll(".", "/"), f.category.replaceAll(".", "/")))
    && (!f.severity || (RANK[ev.severity] ?? 0) >= (RANK[f.severity] ?? 0))
    && (!f.case || ev.caseid === f.case);
}

// ---------- deadlines ----------

// The deadline a case is racing now, and the time it started from.
function deadline(c) {
  if (c.status === "closed") return null;
  if (c.level > 0 && c.level_due_ms) return { due: c.level_due_ms, kind: "level", from: c.opened_ms };
  const accepting = ["reported", "dispatched"].includes(c.status);
  return accepting
    ? { due: c.accept_due_ms, kind: "accept", from: c.opened_ms }
    : { due: c.resolve_due_ms, kind: "resolve", from: c.opened_ms };
}

function band(c, now) {
  const d = deadline(c);
  if (!d) return { band: "closed", left: 0, d };
  const left = d.due - now;
  const whole = Math.max(1, d.due - d.from);
  return { band: left < 0 ? "overdue" : left < whole / 4 ? "warn" : "normal", left, d };
}

function countdownText(c, now) {
  if (c.status === "closed") {
    return { icon: "✔", text: c.on_time === false ? tr("late_closed") : tr("on_time_closed"), band: "closed" };
  }
  const b = band(c, now);
  const icon = { normal: "◷", warn: "⚠", overdue: "✖" }[b.band];
  const text = b.left < 0 ? tr("overdue", { t: duration(-b.left) }) : tr("left", { t: duration(b.left) });
  return { icon, text: `${tr(`due.${b.d.kind}`)} ${text}`, band: b.band };
}

function urgency(c, now) {
  if (c.status === "closed") return Number.MAX_SAFE_INTEGER - (c.closed_ms || 0) / 1e6;
  const b = band(c, now);
  return b.left - (RANK[c.severity] ?? 0);
}

// ---------- rendering ----------

function applyI18n() {
  document.documentElement.lang = state.lang === "en" ? "en" : "zh-CN";
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = tr(e.dataset.i18n);
  $("#lang").textContent = state.lang === "en" ? "中文" : "English";
  $("#street-name").textContent = state.lang === "en" ? body.dataset.streetEn : body.dataset.street;
  for (const l of document.querySelectorAll("#map text.label")) {
    l.textContent = state.lang === "en" ? l.dataset.nameEn : l.dataset.name;
  }
  const k = $("#kiosk-link");
  k.textContent = state.kiosk ? tr("exit_kiosk") : tr("kiosk");
  const p = new URLSearchParams(location.search);
  if (state.kiosk) p.delete("kiosk");
  else p.set("kiosk", "1");
  k.setAttribute("href", `?${p.toString()}`);
  $("#pause").textContent = state.paused ? tr("resume") : tr("pause");
  setConn(state.conn);
  showWho();
}

function setConn(conn) {
  state.conn = conn;
  const c = $("#conn");
  c.className = `conn conn-${conn}`;
  c.querySelector(".icon").textContent = { live: "●", connecting: "◌", reconnecting: "◌", down: "✕", signedout: "○" }[conn];
  c.querySelector(".text").textContent = tr(`conn.${conn}`);
  // Signed out, nothing is shown to be stale.
  const stale = conn === "reconnecting" || conn === "down";
  body.classList.toggle("stale", stale);
  $("#stale").hidden = !stale;
  c.title = conn === "live" ? "" : tr("stale");
}

function renderFilters() {
  const f = state.filter;
  const parts = [];
  if (f.grid) parts.push(gridName(f.grid));
  if (f.category) parts.push(f.category);
  if (f.severity) parts.push(`≥ ${tr(`sev.${f.severity}`)}`);
  if (f.case) parts.push(f.case);
  $("#filters").hidden = parts.length === 0;
  $("#filter-text").textContent = parts.join(" · ");
  for (const p of document.querySelectorAll("#map [data-grid]")) {
    p.classList.toggle("selected", !!f.grid && p.dataset.grid === f.grid);
  }
}

function renderMap() {
  const now = hubNow();
  const count = new Map();
  for (const c of state.cases.values()) {
    if (c.status === "closed") continue;
    const overdue = band(c, now).band === "overdue";
    // A case counts for its grid and every grid above it.
    const segs = (c.grid || "").split("/");
    for (let i = 1; i <= segs.length; i++) {
      const code = segs.slice(0, i).join("/");
      const n = count.get(code) || { open: 0, overdue: 0 };
      n.open += 1;
      if (overdue) n.overdue += 1;
      count.set(code, n);
    }
  }
  state.gridCounts = count;
  for (const p of document.querySelectorAll("#map path.grid")) {
    const n = count.get(p.dataset.grid) || { open: 0, overdue: 0 };
    const st = n.overdue > 0 ? "st-overdue" : n.open > 0 ? "st-open" : "st-quiet";
    p.classList.remove("st-overdue", "st-open", "st-quiet");
    p.classList.add(st);
    p.dataset.open = n.open;
    p.dataset.overdue = n.overdue;
  }
}

function showTip(target) {
  const code = target.dataset.grid;
  const n = (state.gridCounts && state.gridCounts.get(code)) || { open: 0, overdue: 0 };
  $("#map-tip").textContent = `${gridName(code)} — ${tr("open")} ${n.open} · ${tr("overdue", { t: "" }).trim()} ${n.overdue}`;
}

// The rung a case stands on: its escalation level, or for a dispute the
// mediation room it has been referred up to, whichever is higher.
function rung(c) {
  return Math.max(c.level || 0, c.mediation_level || 0);
}

function caseCard(c, now) {
  const cd = countdownText(c, now);
  const dead = [...state.dead.values()].some((d) => d.caseid === c.id);
  const at = rung(c);
  const rungs = LEVELS.map((name, i) =>
    el("li", { class: i < at ? "rung past" : i === at ? "rung now" : "rung", "data-level": name }, tr(`level.${name}`)));
  let next = null;
  if (c.status !== "closed") {
    if (at >= LEVELS.length - 1) next = tr("top_level");
    else {
      const d = deadline(c);
      next = tr("next_escalation", { level: tr(`level.${LEVELS[at + 1]}`), t: timeText(d.due) });
    }
  }
  const selected = state.filter.case === c.id;
  return el("li", {
      class: `case band-${cd.band} sev-${c.severity || "info"}${selected ? " selected" : ""}`,
      "data-case": c.id, "data-grid": c.grid || "", tabindex: "0",
    },
    el("div", { class: "case-head" },
      el("span", { class: `sev sev-${c.severity || "info"}`, text: tr(`sev.${c.severity || "info"}`) }),
      el("span", { class: "cat", text: c.category || "" }),
      el("span", { class: "where", text: gridName(c.grid) })),
    el("div", { class: `countdown band-${cd.band}`, "data-case": c.id },
      el("span", { class: "icon", "aria-hidden": "true", text: cd.icon }), " ",
      el("span", { class: "text", text: cd.text })),
    el("div", { class: "case-meta" },
      el("span", { class: "stage", text: tr(`stage.${c.status}`) }), " · ",
      (c.departments || []).map((d, i) => [i ? ", " : "", el("span", { class: `dept dept-${d.stage}`, text: `${d.name} ${tr(`stage.${d.stage}`)}` })]),
      dead ? el("span", { class: "blocked", text: ` ✖ ${tr("blocked")}` }) : null),
    el("ol", { class: "ladder", "aria-label": "escalation" }, rungs),
    next ? el("div", { class: "next", text: next }) : null,
    el("div", { class: "case-id mono", text: c.id }));
}

function renderCases() {
  const now = hubNow();
  const all = [...state.cases.values()].filter(caseMatches);
  const open = all.filter((c) => c.status !== "closed").sort((a, b) => urgency(a, now) - urgency(b, now));
  const closed = all.filter((c) => c.status === "closed").sort((a, b) => (b.closed_ms || 0) - (a.closed_ms || 0)).slice(0, 10);
  const list = $("#cases");
  list.replaceChildren(...open.map((c) => caseCard(c, now)));
  if (open.length === 0) list.append(el("li", { class: "empty", text: tr("no_cases") }));
  if (closed.length) {
    list.append(el("li", { class: "divider", text: tr("recently_closed") }));
    list.append(...closed.map((c) => caseCard(c, now)));
  }
  $("#cases-count").textContent = String(open.length);
}

function tick() {
  const now = hubNow();
  $("#hub-clock").textContent = timeText(now, true);
  $("#hub-clock").setAttribute("datetime", new Date(now).toISOString());
  for (const cd of document.querySelectorAll("#cases .countdown")) {
    const c = state.cases.get(cd.dataset.case);
    if (!c) continue;
    const x = countdownText(c, now);
    cd.className = `countdown band-${x.band}`;
    cd.querySelector(".icon").textContent = x.icon;
    cd.querySelector(".text").textContent = x.text;
    cd.closest("li.case").classList.remove("band-normal", "band-warn", "band-overdue", "band-closed");
    cd.closest("li.case").classList.add(`band-${x.band}`);
  }
  renderMap();
}

// A department's status report carries no grid: it is where its case is.
function placeOf(ev) {
  return ev.grid || state.cases.get(ev.caseid)?.grid || "";
}

function feedLine(item) {
  const ev = item.event || {};
  const sev = ev.severity || "info";
  const when = eventTime(ev);
  const grid = placeOf(ev);
  return el("li", {
      class: `item sev-${sev}`, "data-cursor": item.cursor, "data-id": ev.id || "",
      "data-grid": grid, "data-case": ev.caseid || "",
    },
    timeEl(when),
    el("span", { class: `sev sev-${sev}`, text: tr(`sev.${sev}`) }),
    el("span", { class: "what", text: tr(`what.${ev.type}`) === `what.${ev.type}` ? ev.type : tr(`what.${ev.type}`) }),
    el("span", { class: "where", text: gridName(grid) }),
    el("span", { class: "cat", text: ev.category || "" }),
    el("span", { class: "src mono", text: ev.department || ev.source || "" }));
}

function renderFeed() {
  const list = $("#feed");
  const items = state.events.filter((i) => eventMatches(i.event || {}));
  list.replaceChildren(...items.slice(0, FEED_MAX).map(feedLine));
  if (items.length === 0) list.append(el("li", { class: "empty", text: tr("no_events") }));
  $("#feed-new").textContent = state.waiting.length ? tr("new_events", { n: state.waiting.length }) : "";
}

function addEvent(item) {
  if (state.paused) {
    state.waiting.push(item);
    $("#feed-new").textContent = tr("new_events", { n: state.waiting.length });
    return;
  }
  state.events.unshift(item);
  if (state.events.length > FEED_MAX * 2) state.events.length = FEED_MAX * 2;
  const list = $("#feed");
  if (!eventMatches(item.event || {})) return;
  list.querySelector(".empty")?.remove();
  list.prepend(feedLine(item));
  while (list.children.length > FEED_MAX) list.lastElementChild.remove();
}

function renderAdapters() {
  const rows = state.adapters.map((a) => {
    const q = a.quarantined;
    const e = a.last_error;
    return el("tr", { "data-adapter": a.name, class: q ? "quarantined" : "" },
      el("td", { title: a.department, text: a.name }),
      el("td", { class: "mono", title: a.sha256, text: a.version }),
      el("td", { class: q ? "bad" : "good", title: q || "", text: q ? `✖ ${tr("quarantined")}: ${q}` : `● ${tr("ok")}` }),
      el("td", { title: `critical ${a.lanes.critical} · major ${a.lanes.major} · minor ${a.lanes.minor} · info ${a.lanes.info}`, text: String(a.queue_depth) }),
      el("td", { text: percent(a.error_rate) }),
      el("td", { class: "err", title: e ? e.error : "" }, e ? [timeEl(e.at_ms), " ", e.error.slice(0, 80)] : "—"));
  });
  $("#adapters tbody").replaceChildren(...rows);
}

function renderDead() {
  const rows = [...state.dead.values()]
    .sort((a, b) => (b.dead_at || "").localeCompare(a.dead_at || ""))
    .map((d) => el("tr", { "data-dead": d.id },
      el("td", {}, timeEl(Date.parse(d.dead_at))),
      el("td", { text: d.target }),
      el("td", { class: "mono", title: d.caseid || "", text: `${d.event_type} ${d.event_id}` }),
      el("td", { class: "err", title: d.last_error || "", text: (d.last_error || "").slice(0, 100) }),
      el("td", { class: "control" },
        mayOperate() ? el("button", { type: "button", class: "replay", "data-dead": d.id, text: tr("replay") }) : null)));
  $("#dead tbody").replaceChildren(...rows);
  $("#dead-count").textContent = String(state.dead.size);
}

function renderFigures() {
  const f = state.figures;
  if (!f) return;
  const m = f.mediation || {};
  const dl = $("#figures");
  const pair = (k, v) => [el("dt", { text: tr(k) }), el("dd", { text: v })];
  dl.replaceChildren(
    ...pair("cases_total", String((f.total.open || 0) + (f.total.closed || 0))),
    ...pair("on_time_rate", percent(f.total.on_time_rate)),
    ...pair("in_grid_rate", percent(f.total.in_grid_rate)),
    el("dt", { text: tr("mediation") }),
    el("dd", {}, ["grid", "community", "street"].map((l, i) => {
      const x = m[l] || {};
      return [i ? " · " : "", `${tr(`level.${l}`)} ${percent(x.success_rate)} (${x.mediated || 0}/${x.concluded || 0})`];
    })));
  // Per community: its own grid and its sub-grids together.
  const by = new Map();
  for (const [code, g] of Object.entries(f.by_grid || {})) {
    const top = code.split("/").slice(0, 2).join("/");
    const x = by.get(top) || { open: 0, closed: 0, on: 0, inGrid: 0 };
    x.open += g.open;
    x.closed += g.closed;
    x.on += Math.round((g.on_time_rate || 0) * g.closed);
    x.inGrid += Math.round((g.in_grid_rate || 0) * g.closed);
    by.set(top, x);
  }
  const rows = [...by.entries()]
    .sort((a, b) => b[1].open - a[1].open || b[1].closed - a[1].closed)
    .map(([code, x]) => el("tr", { "data-grid": code },
      el("td", { text: gridName(code) }),
      el("td", { text: String(x.open) }),
      el("td", { text: String(x.closed) }),
      el("td", { text: x.closed ? percent(x.on / x.closed) : "—" }),
      el("td", { text: x.closed ? percent(x.inGrid / x.closed) : "—" })));
  $("#grid-figures tbody").replaceChildren(...rows);
}

async function renderDetail() {
  const panel = $("#detail-panel");
  const id = state.filter.case;
  if (!id) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  $("#detail-id").textContent = id;
  const res = await fetch(`/v1/cases/${encodeURIComponent(id)}`);
  if (!res.ok) {
    $("#detail").replaceChildren(el("p", { class: "empty", text: `${res.status}` }));
    return;
  }
  const c = await res.json();
  if (state.filter.case !== id) return;
  const steps = (c.timeline || []).map((e) => el("li", { class: "step" },
    timeEl(Date.parse(e.at), true), " ",
    el("strong", { text: tr(`what.${e.what}`) === `what.${e.what}` ? e.what : tr(`what.${e.what}`) }), " ",
    el("span", { class: "who", text: e.department || e.source || "" }),
    e.note ? el("span", { class: "note", text: ` (${e.note})` }) : null));
  const depts = (c.departments || []).map((d) => el("tr", {},
    el("td", { text: d.name }), el("td", { class: `stage-${d.stage}`, text: tr(`stage.${d.stage}`) })));
  const report = (c.timeline || []).find((e) => e.what === "gov.incident.reported" || e.what === "gov.dispute.reported") || (c.timeline || [])[0];
  const deliveries = el("table", { class: "deliveries" });
  const received = el("table", { class: "flows" });
  const dead = [...state.dead.values()].filter((d) => d.caseid === id);
  fill($("#detail"),
    el("p", { class: "detail-head" },
      el("span", { class: `sev sev-${c.severity || "info"}`, text: tr(`sev.${c.severity || "info"}`) }), " ",
      `${c.category || ""} · ${gridName(c.grid)} · ${tr(`stage.${c.status}`)} · ${tr(`level.${c.level_name}`)}`),
    dead.length ? el("p", { class: "blocked", text: `✖ ${tr("blocked")}: ${dead.map((d) => d.target).join(", ")}` }) : null,
    el("h3", { text: tr("timeline") }),
    el("ol", { class: "timeline" }, steps),
    el("h3", { text: tr("departments") }),
    el("table", { class: "departments" }, depts),
    el("h3", { text: tr("deliveries") }),
    deliveries,
    el("h3", { text: tr("received") }),
    received);
  // What each department received of the case's events, and what was
  // withheld: the hub's flow records (field names and actions, no values).
  const f = await fetch(`/v1/cases/${encodeURIComponent(id)}/flows`);
  if (f.ok && state.filter.case === id) {
    const flows = (await f.json()).flows || [];
    received.replaceChildren(...flows.map((x) => el("tr", { class: `flow-${x.outcome}` },
      el("td", { text: x.target }),
      el("td", { class: "mono", text: x.event }),
      el("td", { text: tr(`status.${x.outcome}`) }),
      el("td", { class: "fields" }, Object.entries(x.fields || {}).map(([field, action]) =>
        el("span", { class: `act act-${action}`, title: field, text: `${field.replace(/^@/, "")} ${tr(`act.${action}`)}` }))))));
    if (!flows.length) received.replaceChildren(el("tr", {}, el("td", { class: "empty", text: tr("no_flows") })));
  }
  if (report && report.event_id) {
    const r = await fetch(`/v1/events/${encodeURIComponent(report.event_id)}`);
    if (r.ok && state.filter.case === id) {
      const ev = await r.json();
      deliveries.replaceChildren(...(ev.deliveries || []).map((d) => el("tr", { class: `delivery-${d.status}` },
        el("td", { text: d.target }),
        el("td", { text: tr(`status.${d.status}`) }),
        el("td", { text: `×${d.attempts}` }),
        el("td", { class: "err", title: d.last_error || "", text: (d.last_error || "").slice(0, 60) }))));
    }
  }
}

function renderAll() {
  applyI18n();
  renderFilters();
  renderMap();
  renderCases();
  renderFeed();
  renderAdapters();
  renderDead();
  renderFigures();
  tick();
  renderDetail();
}

// ---------- data ----------

function applySnapshot(s, full) {
  state.nowMs = s.now_ms;
  state.nowAt = performance.now();
  state.manual = s.clock === "manual";
  state.tz = s.time_zone || state.tz;
  state.adapters = s.adapters || [];
  state.figures = s.figures;
  if (!full) return;
  state.cursor = s.cursor;
  state.cases = new Map((s.cases || []).map((c) => [c.id, c]));
  state.events = s.events || [];
  state.dead = new Map((s.dead_letters || []).map((d) => [d.id, d]));
}

async function loadSnapshot(full = true) {
  const res = await fetch("/v1/cockpit/snapshot");
  if (res.status === 401) {
    sessionEnded();
    throw new Error("signed out");
  }
  if (!res.ok) throw new Error(`snapshot: ${res.status}`);
  applySnapshot(await res.json(), full);
  if (full) renderAll();
  else {
    renderAdapters();
    renderFigures();
  }
}

// Adapter health and the figures come with the snapshot: read it again
// (without its cases and events, which the stream keeps current) soon
// after a change, at most once a second however many changes come.
let healthTimer = null;
function refreshHealthSoon() {
  if (healthTimer) return;
  healthTimer = setTimeout(() => {
    healthTimer = null;
    loadSnapshot(false).catch(() => {});
  }, 1000);
}

function onItem(kind, e) {
  const cursor = Number(e.lastEventId);
  if (!(cursor > state.cursor)) return;
  state.cursor = cursor;
  const data = JSON.parse(e.data);
  switch (kind) {
    case "event":
      addEvent({ cursor, event: data });
      break;
    case "case":
      state.cases.set(data.id, data);
      renderCases();
      renderMap();
      if (state.filter.case === data.id) renderDetail();
      // The street's figures are computed by the hub over every case.
      refreshHealthSoon();
      break;
    case "dead-letter":
      if (data.replayed) state.dead.delete(data.id);
      else state.dead.set(data.id, data);
      renderDead();
      renderCases();
      refreshHealthSoon();
      break;
    case "adapter":
      refreshHealthSoon();
      break;
    case "clock":
      state.nowMs = data.now_ms;
      state.nowAt = performance.now();
      tick();
      break;
  }
}

function connect() {
  if (state.source) state.source.close();
  const source = new EventSource(`/v1/stream?after=${state.cursor}`);
  state.source = source;
  source.onopen = () => setConn("live");
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) {
      setConn("reconnecting");
      return;
    }
    // The hub refused the stream (its session ended?) or is gone.
    setConn("down");
    checkSession();
  };
  for (const kind of ["event", "case", "adapter", "dead-letter", "clock"]) {
    source.addEventListener(kind, (e) => onItem(kind, e));
  }
  source.addEventListener("resync", () => {
    loadSnapshot(true).catch(() => setConn("down"));
  });
}

// ---------- interaction ----------

function setFilter(key, value) {
  state.filter[key] = state.filter[key] === value ? "" : value;
  writeUrl();
  renderFilters();
  renderCases();
  renderFeed();
  if (key === "case") renderDetail();
}

function bind() {
  const map = $("#map");
  if (map) {
    map.addEventListener("click", (e) => {
      const g = e.target.closest("[data-grid]");
      if (!g) return;
      const code = g.dataset.grid;
      setFilter("grid", code === body.dataset.streetCode ? "" : code);
    });
    map.addEventListener("mouseover", (e) => {
      const g = e.target.closest("[data-grid]");
      if (g) showTip(g);
    });
    map.addEventListener("focusin", (e) => {
      const g = e.target.closest("[data-grid]");
      if (g) showTip(g);
    });
    map.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && e.target.dataset.grid) setFilter("grid", e.target.dataset.grid);
    });
  }
  $("#clear-filter").addEventListener("click", () => {
    state.filter = { grid: "", category: "", severity: "", case: "" };
    writeUrl();
    renderAll();
  });
  $("#lang").addEventListener("click", () => {
    state.lang = state.lang === "en" ? "zh" : "en";
    writeUrl();
    renderAll();
  });
  $("#pause").addEventListener("click", () => {
    state.paused = !state.paused;
    if (!state.paused) {
      state.events.unshift(...state.waiting.reverse());
      state.waiting = [];
      renderFeed();
    }
    applyI18n();
  });
  $("#cases").addEventListener("click", (e) => {
    const li = e.target.closest("li.case");
    if (li) setFilter("case", li.dataset.case);
  });
  $("#cases").addEventListener("keydown", (e) => {
    const li = e.target.closest("li.case");
    if (li && e.key === "Enter") setFilter("case", li.dataset.case);
  });
  $("#detail-close").addEventListener("click", () => setFilter("case", state.filter.case));
  $("#signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("#signin-token").value.trim());
  });
  $("#signout").addEventListener("click", async () => {
    await fetch("/v1/session", { method: "DELETE" }).catch(() => {});
    stopFollowing();
    showSignIn("signed_out");
  });
  $("#dead").addEventListener("click", async (e) => {
    const b = e.target.closest("button.replay");
    if (!b) return;
    b.disabled = true;
    b.textContent = tr("replaying");
    const res = await fetch(`/v1/dead-letters/${encodeURIComponent(b.dataset.dead)}/replay`, { method: "POST" });
    if (!res.ok) {
      b.disabled = false;
      b.textContent = `${tr("replay")} (${res.status})`;
    }
  });
}

function mayOperate() {
  const w = state.who;
  return !w || w.auth === "off" || w.role === "operator" || w.role === "admin";
}

function showWho() {
  const w = state.who;
  const on = !!w && w.auth === "on";
  $("#who").hidden = !on;
  $("#signout").hidden = !on || w.via !== "cookie";
  if (on) $("#who").textContent = `${w.name} · ${tr(`role.${w.role}`)}`;
}

function showSignIn(reason) {
  state.who = null;
  setConn("signedout");
  body.classList.add("signed-out");
  $("#signin").hidden = false;
  showWho();
  const err = $("#signin-error");
  err.hidden = !reason;
  err.textContent = reason ? tr(reason) : "";
  $("#signin-token").value = "";
  $("#signin-token").focus();
}

function stopFollowing() {
  if (state.source) state.source.close();
  state.source = null;
}

async function signIn(token) {
  if (!token) return;
  $("#signin-submit").disabled = true;
  try {
    const res = await fetch("/v1/session", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token }),
    });
    if (!res.ok) {
      showSignIn(`signin.${res.status}`);
      return;
    }
    begin(await res.json());
  } catch (err) {
    showSignIn("down");
  } finally {
    $("#signin-submit").disabled = false;
  }
}

/** Whoever is calling: the session, `{auth: "off"}`, or null. */
async function whoAmI() {
  const res = await fetch("/v1/session");
  if (!res.ok) throw new Error(`session: ${res.status}`);
  const who = await res.json();
  return who.auth === "off" || who.name ? who : null;
}

async function checkSession() {
  try {
    if (!(await whoAmI())) sessionEnded();
  } catch (err) {
    // The hub is unreachable: the connection state says so already.
  }
}

function sessionEnded() {
  if (!state.who || state.who.auth === "off") return;
  stopFollowing();
  showSignIn("session_ended");
}

async function begin(who) {
  state.who = who;
  body.classList.remove("signed-out");
  $("#signin").hidden = true;
  $("#signin-error").hidden = true;
  showWho();
  setConn("connecting");
  try {
    await loadSnapshot(true);
  } catch (err) {
    if (!state.who) return;
    setConn("down");
  }
  connect();
  if (!state.started) {
    state.started = true;
    setInterval(tick, 1000);
    setInterval(() => {
      if (state.who) loadSnapshot(false).catch(() => {});
    }, 15000);
  }
}

async function start() {
  body.classList.toggle("kiosk", state.kiosk);
  const street = document.querySelector("#map path.street");
  if (street) body.dataset.streetCode = street.dataset.grid;
  bind();
  applyI18n();
  let who = null;
  try {
    who = await whoAmI();
  } catch (err) {
    setConn("down");
    return;
  }
  if (who) begin(who);
  else showSignIn(null);
}

start();
