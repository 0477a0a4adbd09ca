// The Logbook console: a hash-routed page over /console/api/*.
// Every element is built with textContent: nothing from the store is ever
// parsed as HTML.
"use strict";

const state = { timer: null, session: null, generation: 0 };

// A JSON number whose digits a double cannot hold, kept as written.
class Raw {
  constructor(source) { this.source = source; }
  toString() { return this.source; }
}

// Parses JSON, keeping numbers that would lose digits (where the browser
// gives the source text to revivers).
function parseExact(text) {
  return JSON.parse(text, function (key, value, context) {
    if (typeof value === "number" && context && typeof context.source === "string"
        && String(value) !== context.source) {
      return new Raw(context.source);
    }
    return value;
  });
}

function pretty(v, indent = "") {
  if (v instanceof Raw) return v.source;
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  const inner = indent + "  ";
  if (Array.isArray(v)) {
    if (v.length === 0) return "[]";
    return "[\n" + v.map((x) => inner + pretty(x, inner)).join(",\n") + "\n" + indent + "]";
  }
  const keys = Object.keys(v);
  if (keys.length === 0) return "{}";
  return "{\n" + keys.map((k) => inner + JSON.stringify(k) + ": " + pretty(v[k], inner)).join(",\n")
    + "\n" + indent + "}";
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

class LoginNeeded extends Error {}

async function api(path, options = {}) {
  const response = await fetch("/console/api/" + path, {
    credentials: "same-origin",
    ...options,
    headers: { "X-Logbook-Console": "1", ...(options.headers || {}) },
  });
  const text = await response.text();
  let body;
  try { body = parseExact(text); } catch (_) { body = { error: text || response.statusText }; }
  if (response.status === 401 && body.login) {
    showLogin(body.error);
    throw new LoginNeeded(body.error);
  }
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// Shows `message` under the header (an error unless `ok`); "" hides it.
function flash(message, ok = false) {
  const f = document.getElementById("flash");
  f.textContent = message || "";
  f.className = ok ? "ok" : "";
  f.hidden = !message;
}

function showLogin(why) {
  stopTimer();
  document.getElementById("main").replaceChildren();
  document.getElementById("login").hidden = false;
  document.getElementById("login-why").textContent = why || "";
  document.getElementById("who").textContent = "";
  document.getElementById("logout").hidden = true;
}

async function login(event) {
  event.preventDefault();
  const user = document.getElementById("login-user").value;
  const password = document.getElementById("login-password").value;
  const token = document.getElementById("login-token").value;
  const body = token ? { token } : { user, password };
  const error = document.getElementById("login-error");
  error.textContent = "";
  try {
    await api("login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    if (!(e instanceof LoginNeeded)) error.textContent = e.message;
    return;
  }
  document.getElementById("login-password").value = "";
  document.getElementById("login-token").value = "";
  document.getElementById("login").hidden = true;
  state.session = null;
  route();
}

async function logout() {
  try { await api("logout", { method: "POST" }); } catch (_) { /* shown by the next page */ }
  state.session = null;
  showLogin("Logged out.");
}

function stopTimer() {
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
  state.generation += 1;
}

// Calls `tick` now and then every `ms` until the page changes.
function every(ms, tick) {
  const generation = state.generation;
  const run = async () => {
    if (generation !== state.generation) return;
    try { await tick(); flash(""); } catch (e) {
      if (e instanceof LoginNeeded) return;
      flash(e.message);
    }
    if (generation === state.generation) state.timer = setTimeout(run, ms);
  };
  run();
}

function can(op) {
  const s = state.session;
  return !!s && (s.admin || (s.ops || []).includes(op));
}

function num(n) {
  if (n === null || n === undefined) return "-";
  if (n instanceof Raw) return n.source;
  return Number.isInteger(n) ? n.toLocaleString("en-US") : n.toFixed(1);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
}

function payloadText(value, encoding) {
  if (encoding === "json") return pretty(value);
  if (!value) return "(empty)";
  try {
    const raw = Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
    const text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    return text;
  } catch (_) {
    return "base64: " + value;
  }
}

function preview(value, encoding) {
  const text = encoding === "json" ? pretty(value).replace(/\s*\n\s*/g, " ") : payloadText(value, encoding);
  return text.length > 120 ? text.slice(0, 117) + "..." : text;
}

function streamLink(name) {
  return el("a", { href: "#/stream/" + encodeURIComponent(name), class: "stream" }, name);
}

function eventCard(e) {
  return el("div", { class: "event", "data-position": e.position },
    el("div", { class: "head" },
      el("span", { class: "type" }, e.type),
      el("span", {}, "version ", el("b", {}, num(e.version))),
      el("span", {}, "position ", el("b", {}, num(e.position))),
      el("span", { class: "muted" }, e.timestamp),
      el("span", { class: "muted" }, "id " + e.id)),
    el("div", { class: "muted" }, "data"),
    el("pre", { class: "data" }, payloadText(e.data, e.data_encoding)),
    e.metadata_encoding === "base64" && e.metadata === "" ? null : [
      el("div", { class: "muted" }, "metadata"),
      el("pre", { class: "metadata" }, payloadText(e.metadata, e.metadata_encoding)),
    ]);
}

// #/streams?prefix=...
async function streamsPage(main, params) {
  const prefix = params.get("prefix") || "";
  const input = el("input", { id: "stream-search", type: "search", value: prefix, placeholder: "stream name prefix" });
  const form = el("form", { class: "toolbar", onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = "#/streams?prefix=" + encodeURIComponent(input.value);
  } }, input, el("button", { type: "submit" }, "Search"));
  const body = el("tbody");
  const more = el("button", { type: "button", id: "streams-more", hidden: true }, "More");
  main.replaceChildren(el("h1", {}, "Streams"), form,
    el("table", { id: "streams" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Stream"), el("th", { class: "num" }, "Last version"),
        el("th", { class: "num" }, "Live events"), el("th", {}, "Deleted"), el("th", {}, "Metadata"))),
      body),
    more);
  let after = null;
  const load = async () => {
    let query = "streams?limit=50&prefix=" + encodeURIComponent(prefix);
    if (after !== null) query += "&after=" + encodeURIComponent(after);
    const page = await api(query);
    for (const s of page.streams) {
      const meta = Object.keys(s.metadata || {}).length ? JSON.stringify(s.metadata) : "";
      body.append(el("tr", { "data-stream": s.stream },
        el("td", {}, streamLink(s.stream)),
        el("td", { class: "num" }, num(s.last_version)),
        el("td", { class: "num" }, num(s.event_count)),
        el("td", {}, s.deleted || ""),
        el("td", { class: "muted" }, meta)));
    }
    if (page.streams.length === 0 && after === null) {
      body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No streams" + (prefix ? " starting with " + prefix : "") + ".")));
    }
    after = page.next;
    more.hidden = page.next === null || page.next === undefined;
  };
  more.addEventListener("click", () => load().catch((e) => flash(e.message)));
  await load();
}

// #/stream/<name>
async function streamPage(main, name) {
  const events = el("div", { id: "events" });
  const info = el("div", { class: "kv", id: "stream-info" });
  const older = el("button", { type: "button", id: "stream-older", hidden: true }, "Older events");
  main.replaceChildren(el("h1", {}, "Stream ", el("code", { id: "stream-name" }, name)),
    info, el("h2", {}, "Events, newest first"), events, older);
  let from = null;
  const load = async () => {
    let query = "stream?dir=back&limit=20&name=" + encodeURIComponent(name);
    if (from !== null) query += "&from=" + from;
    const page = await api(query);
    if (from === null) {
      const i = page.info;
      const rows = i ? [
        ["Last version", num(i.last_version)], ["First live version", num(i.first_version)],
        ["Live events", num(i.event_count)], ["Deleted", i.deleted || "no"],
        ["Metadata", Object.keys(i.metadata || {}).length ? JSON.stringify(i.metadata) : "none"],
      ] : [["Last version", num(page.last_version)]];
      info.replaceChildren(...rows.flatMap(([k, v]) => [el("span", { class: "muted" }, k), el("span", {}, v)]));
      if (page.events.length === 0) events.append(el("p", { class: "muted" }, "No events."));
    }
    for (const e of page.events) events.append(eventCard(e));
    from = page.next === null || page.next === undefined ? null : String(page.next);
    older.hidden = from === null;
  };
  older.addEventListener("click", () => load().catch((e) => flash(e.message)));
  await load();
}

// #/log: the global log, newest first, following live appends.
async function logPage(main) {
  const body = el("tbody");
  const head = el("span", { id: "log-head" }, "");
  const status = el("span", { class: "pill live", id: "log-status" }, "live");
  let paused = false;
  const pause = el("button", { type: "button", id: "log-pause", onclick: () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    status.textContent = paused ? "paused" : "live";
    status.className = "pill " + (paused ? "paused" : "live");
  } }, "Pause");
  main.replaceChildren(el("h1", {}, "Live log"),
    el("div", { class: "toolbar" }, status, pause, el("span", { class: "muted" }, "head "), head),
    el("table", { id: "log" },
      el("thead", {}, el("tr", {},
        el("th", { class: "num" }, "Position"), el("th", {}, "Time"), el("th", {}, "Stream"),
        el("th", { class: "num" }, "Version"), el("th", {}, "Type"), el("th", {}, "Data"))),
      body));
  const row = (e, fresh) => el("tr", { class: fresh ? "fresh" : null, "data-position": e.position },
    el("td", { class: "num" }, num(e.position)),
    el("td", { class: "muted time", title: e.timestamp }, e.timestamp.replace("T", " ").slice(0, 23)),
    el("td", {}, streamLink(e.stream)), el("td", { class: "num" }, num(e.version)),
    el("td", {}, e.type), el("td", { class: "muted preview" }, preview(e.data, e.data_encoding)));
  const generation = state.generation;
  const first = await api("log?dir=back&limit=50");
  // The page changed while the first page was read: follow nothing.
  if (generation !== state.generation) return;
  for (const e of first.events) body.append(row(e, false));
  head.textContent = num(first.head);
  let cursor = String(first.head);
  every(1000, async () => {
    if (paused) return;
    const page = await api("log?limit=200&from=" + cursor);
    for (const e of page.events) body.prepend(row(e, true));
    while (body.rows.length > 200) body.deleteRow(-1);
    head.textContent = num(page.head);
    cursor = String(page.next === null || page.next === undefined ? page.head : page.next);
  });
}

// #/groups: catch-up subscriptions (figures) and consumer groups.
async function groupsPage(main) {
  const subs = el("div", { class: "kv", id: "subscriptions" });
  const body = el("tbody");
  main.replaceChildren(el("h1", {}, "Subscriptions & consumer groups"),
    el("h2", {}, "Catch-up subscriptions"), subs,
    el("h2", {}, "Consumer groups"),
    el("table", { id: "groups" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Group"), el("th", {}, "Source"), el("th", {}, "Strategy"),
        el("th", { class: "num" }, "Lag"), el("th", { class: "num" }, "In flight"),
        el("th", { class: "num" }, "Waiting"), el("th", { class: "num" }, "Consumers"),
        el("th", { class: "num" }, "Parked"), el("th", { class: "num" }, "Acked"), el("th", {}, ""))),
      body));
  every(2000, async () => {
    try {
      const stats = await api("stats");
      const s = stats.now;
      subs.replaceChildren(
        el("span", { class: "muted" }, "Open"), el("span", { id: "subscriptions-open" }, num(s.subscriptions)),
        el("span", { class: "muted" }, "Largest lag (events)"), el("span", {}, num(s.subscription_lag_max)),
        el("span", { class: "muted" }, "Total lag (events)"), el("span", {}, num(s.subscription_lag_total)));
    } catch (e) {
      if (e instanceof LoginNeeded) throw e;
      subs.replaceChildren(el("span", { class: "muted" }, e.message));
    }
    const page = await api("groups");
    body.replaceChildren(...page.groups.map((g) => el("tr", { "data-group": g.group },
      el("td", {}, g.group), el("td", {}, g.source), el("td", {}, g.strategy),
      el("td", { class: "num" }, num(g.lag)), el("td", { class: "num" }, num(g.in_flight)),
      el("td", { class: "num" }, num(g.waiting)), el("td", { class: "num" }, num(g.consumers)),
      el("td", { class: "num" }, num(g.parked)), el("td", { class: "num" }, num(g.acked)),
      el("td", {}, g.parked > 0 && can("groups")
        ? el("button", { type: "button", onclick: async () => {
          try {
            const r = await api("groups/replay?group=" + encodeURIComponent(g.group), { method: "POST" });
            flash("Replaying " + r.entries + " parked events of " + r.group + ".", true);
          } catch (e) { flash(e.message); }
        } }, "Replay parked")
        : ""))));
    if (page.groups.length === 0) {
      body.append(el("tr", {}, el("td", { colspan: 10, class: "muted" }, "No consumer groups.")));
    }
  });
}

const CHARTS = [
  ["events_per_sec", "Events written / s", num],
  ["appends_per_sec", "Appends / s", num],
  ["fsyncs_per_sec", "fsyncs / s", num],
  ["connections", "Connections", num],
  ["subscriptions", "Subscriptions", num],
  ["subscription_lag_max", "Largest subscription lag", num],
  ["events", "Events stored", num],
  ["log_bytes", "Log size", bytes],
];

function chart(samples, key) {
  const values = samples.map((s) => Number(s[key]) || 0);
  const max = Math.max(1, ...values);
  const w = 300, h = 70;
  const points = values.map((v, i) => {
    const x = values.length < 2 ? w : (i / (values.length - 1)) * w;
    const y = h - 2 - (v / max) * (h - 6);
    return x.toFixed(1) + "," + y.toFixed(1);
  }).join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("preserveAspectRatio", "none");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  svg.append(line);
  return svg;
}

// #/stats: the Stats figures and small charts of the last minutes.
async function statsPage(main) {
  const charts = el("div", { class: "charts", id: "charts" });
  const figures = el("div", { class: "kv", id: "figures" });
  const span = el("span", { class: "muted" });
  main.replaceChildren(el("h1", {}, "Stats"), span, charts, el("h2", {}, "All figures"), figures);
  every(2000, async () => {
    const stats = await api("stats");
    const samples = stats.history;
    const minutes = Math.round((samples.length * stats.every_ms) / 6000) / 10;
    span.textContent = "Last " + minutes + " minutes, a sample every " + stats.every_ms / 1000 + " s.";
    charts.replaceChildren(...CHARTS.map(([key, title, show]) => {
      const last = samples.length ? samples[samples.length - 1][key] : stats.now[key];
      return el("div", { class: "chart", "data-key": key },
        el("div", { class: "title" }, el("span", {}, title), el("span", { class: "value" }, show(last))),
        chart(samples, key));
    }));
    const rows = [];
    for (const [k, v] of Object.entries(stats.now)) {
      if (v !== null && typeof v === "object" && !(v instanceof Raw)) continue;
      rows.push(el("span", { class: "muted" }, k), el("span", {}, typeof v === "number" || v instanceof Raw ? num(v) : String(v)));
    }
    figures.replaceChildren(...rows);
  });
}

async function route() {
  stopTimer();
  flash("");
  const main = document.getElementById("main");
  const hash = location.hash || "#/streams";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  const page = path.split("/")[1] || "streams";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === page || (page === "stream" && a.dataset.page === "streams"));
  }
  try {
    if (!state.session) {
      state.session = await api("session");
      document.getElementById("login").hidden = true;
      const s = state.session;
      document.getElementById("who").textContent = s.user + (s.roles && s.roles.length ? " (" + s.roles.join(", ") + ")" : "");
      document.getElementById("logout").hidden = !s.logged_in;
      document.getElementById("footer").textContent = "logbookd " + s.server_version;
    }
    if (page === "stream") await streamPage(main, decodeURIComponent(path.slice("/stream/".length)));
    else if (page === "log") await logPage(main);
    else if (page === "groups") await groupsPage(main);
    else if (page === "stats") await statsPage(main);
    else await streamsPage(main, params);
  } catch (e) {
    if (e instanceof LoginNeeded) { state.session = null; return; }
    flash(e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  route();
});
