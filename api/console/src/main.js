// The dsrlb web console: reads the REST API of the appliance that served
// it (status, services, rates, history, events) every few seconds and
// draws tables and uPlot charts; with the API token (kept in
// sessionStorage, sent as a bearer token) it drains, enables, disables and
// reweights backends through the same API as dsrctl. It fetches nothing
// from anywhere else (the server's Content-Security-Policy enforces it).

import uPlot from "uplot";

const POLL_MS = 5000; // the server samples rates every 5 s
const PAGE = 50; // table rows per page: 2,000 backends stay fast
const EVENTS_KEPT = 100;
const WINDOW_S = 15 * 60; // the server keeps 15 minutes of rates
const TOKEN_KEY = "dsrlb.token";

const $ = (id) => document.getElementById(id);

// el builds an element; children are nodes or text (never parsed as HTML).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

// si formats n with an SI prefix: 1234567 -> "1.23 M".
function si(n) {
  if (!isFinite(n)) return "-";
  const a = Math.abs(n);
  const units = [[1e12, " T"], [1e9, " G"], [1e6, " M"], [1e3, " k"]];
  for (const [f, u] of units) if (a >= f) return (n / f).toPrecision(3) + u;
  return a >= 10 || Number.isInteger(n) ? n.toFixed(0) : n.toPrecision(2);
}

function duration(s) {
  s = Math.floor(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  status: null, // GET /api/v1/status
  config: new Map(), // service name -> GET /api/v1/services entry
  rates: new Map(), // service name -> {svc, backends: Map ip -> rates}
  selected: null, // service name
  selectedBackend: null, // backend IP
  servicesPage: 0,
  backendsPage: 0,
  events: [],
  busy: false,
};

// api fetches path from the API; changes carry the token.
async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  if (opts.method && opts.method !== "GET" && state.token) headers.Authorization = "Bearer " + state.token;
  const r = await fetch(path, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    cache: "no-store",
  });
  const text = await r.text();
  const doc = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const e = doc && doc.error ? doc.error : { message: r.statusText };
    throw new Error((e.field ? e.field + ": " : "") + e.message + " (HTTP " + r.status + ")");
  }
  return doc;
}

function say(msg, isError) {
  const m = $("message");
  m.textContent = msg;
  m.className = "banner " + (isError ? "error" : "ok");
}

// ---- token and read-only mode ------------------------------------------

function applyMode() {
  const rw = state.token !== "";
  const mode = $("mode");
  mode.className = "banner " + (rw ? "readwrite" : "readonly");
  mode.textContent = rw
    ? "Changes enabled with the token of this tab (kept until the tab closes). The API checks it on every change."
    : "Read-only: enter the API token to drain, enable, disable or reweight backends.";
  document.body.dataset.mode = rw ? "readwrite" : "readonly";
  for (const c of document.querySelectorAll(".control")) c.disabled = !rw || state.busy;
  $("token-forget").disabled = !rw;
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  $("token").value = "";
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  applyMode();
});
$("token-forget").addEventListener("click", () => {
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  applyMode();
});

// ---- charts ---------------------------------------------------------------

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const charts = new Map(); // element id -> {plot, key}

// draw shows series (names, arrays of values at times) in the chart of
// element id, titled title. The element's data-points attribute counts
// the points drawn, for tests and for the curious.
function draw(id, title, times, series) {
  const box = $(id);
  const key = title + "|" + series.map((s) => s.label).join(",");
  let c = charts.get(id);
  if (!c || c.key !== key) {
    if (c) c.plot.destroy();
    box.textContent = "";
    const opts = {
      title,
      width: Math.max(280, box.clientWidth || 360),
      height: 170,
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      // Always the last 15 minutes, the window the server keeps.
      scales: { x: { time: true, range: (u, min, max) => [max - WINDOW_S, max] } },
      axes: [{}, { values: (u, vals) => vals.map(si), size: 60 }],
      series: [{}].concat(series.map((s, i) => ({ label: s.label, stroke: PALETTE[i % PALETTE.length], width: 1.5, points: { show: false } }))),
    };
    c = { plot: new uPlot(opts, [times].concat(series.map((s) => s.values)), box), key };
    charts.set(id, c);
  } else {
    c.plot.setData([times].concat(series.map((s) => s.values)));
  }
  box.dataset.points = String(times.length);
}

// seriesMap maps the series of h by name; a series h lacks (nothing
// recorded yet) reads as zeros.
function seriesMap(h) {
  const m = new Map();
  for (const s of h.series) m.set(s.name, s.values);
  return { get: (name) => m.get(name) || h.times.map(() => 0) };
}

async function drawAppliance() {
  let h;
  try {
    h = await api("/api/v1/history");
  } catch (e) {
    return; // before the first interval nothing is recorded yet
  }
  const m = seriesMap(h);
  draw("chart-appliance-packets", "packets/s", h.times, [
    { label: "received", values: m.get("rx_packets_per_second") },
    { label: "sent", values: m.get("tx_packets_per_second") },
    { label: "new flows/s", values: m.get("new_flows_per_second") },
  ]);
  const drops = [];
  for (const s of h.series) {
    if (s.name.startsWith("drops_per_second:") && s.values.some((v) => v > 0)) {
      drops.push({ label: s.name.slice("drops_per_second:".length), values: s.values });
    }
  }
  if (drops.length === 0) drops.push({ label: "no drops", values: h.times.map(() => 0) });
  draw("chart-appliance-drops", "drops/s by reason", h.times, drops);
}

async function drawObject(prefix, query, withNoBackend) {
  let h;
  try {
    h = await api("/api/v1/history?" + query);
  } catch (e) {
    return;
  }
  const m = seriesMap(h);
  draw("chart-" + prefix + "-packets", "packets/s", h.times, [{ label: "packets/s", values: m.get("packets_per_second") }]);
  draw("chart-" + prefix + "-bits", "bits/s", h.times, [{ label: "bits/s", values: m.get("bits_per_second") }]);
  const flows = [{ label: "new flows/s", values: m.get("new_flows_per_second") }];
  if (withNoBackend) flows.push({ label: "no_backend drops/s", values: m.get("no_backend_drops_per_second") });
  draw("chart-" + prefix + "-flows", withNoBackend ? "new flows/s, drops/s" : "new flows/s", h.times, flows);
}

// ---- tables ------------------------------------------------------------------

function pager(id, page, total, onPage) {
  const p = $(id);
  p.textContent = "";
  const pages = Math.max(1, Math.ceil(total / PAGE));
  p.append(
    el("button", { type: "button", disabled: page <= 0, onclick: () => onPage(page - 1) }, "‹ prev"),
    " page " + (page + 1) + " of " + pages + " ",
    el("button", { type: "button", disabled: page >= pages - 1, onclick: () => onPage(page + 1) }, "next ›"),
  );
}

function matches(filter, ...fields) {
  if (!filter) return true;
  return filter
    .toLowerCase()
    .split(/\s+/)
    .every((w) => fields.some((f) => String(f).toLowerCase().includes(w)));
}

function renderServices() {
  const st = state.status;
  if (!st) return;
  const filter = $("services-filter").value.trim();
  const rows = st.services.filter((s) => matches(filter, s.name, s.vip, s.mode, s.protocol, s.announced ? "announced" : "withdrawn"));
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  state.servicesPage = Math.min(state.servicesPage, pages - 1);
  $("services-count").textContent = rows.length === st.services.length ? "(" + rows.length + ")" : "(" + rows.length + " of " + st.services.length + ")";
  pager("services-pager", state.servicesPage, rows.length, (p) => {
    state.servicesPage = p;
    renderServices();
  });
  const body = el("tbody");
  for (const s of rows.slice(state.servicesPage * PAGE, (state.servicesPage + 1) * PAGE)) {
    const r = state.rates.get(s.name);
    const svc = r ? r.svc : null;
    const tr = el(
      "tr",
      { class: "clickable" + (s.name === state.selected ? " selected" : ""), "data-service": s.name, onclick: () => select(s.name) },
      el("td", {}, s.name),
      el("td", {}, endpoint(s)),
      el("td", {}, s.mode),
      el("td", { class: s.announced ? "good" : "bad", title: s.announce_reason || "" }, (s.announced ? "announced" : "not announced") + (s.announce_reason ? ": " + s.announce_reason : "")),
      el("td", { class: s.usable_backends >= Math.max(1, s.min_healthy) ? "" : "bad" }, s.usable_backends + " / " + s.backends.length + (s.min_healthy ? " (min " + s.min_healthy + ")" : "")),
      el("td", { class: "num" }, svc ? si(svc.packets_per_second) : "-"),
      el("td", { class: "num" }, svc ? si(svc.bits_per_second) : "-"),
      el("td", { class: "num" }, svc ? si(svc.new_flows_per_second) : "-"),
    );
    body.append(tr);
  }
  $("services").replaceChild(body, $("services").tBodies[0]);
}

// endpoint writes a service's VIP, port (* for all) and protocol, an IPv6
// VIP in brackets.
function endpoint(s) {
  const vip = s.vip.includes(":") ? "[" + s.vip + "]" : s.vip;
  return vip + ":" + (s.port || "*") + "/" + s.protocol;
}

function probedBy(cfg) {
  const h = cfg && cfg.health;
  if (!h) return "not checked";
  let s = h.type;
  if (h.port) s += " :" + h.port;
  if (h.path) s += " " + h.path;
  if (h.via) s += " via " + h.via;
  return s;
}

function renderBackends() {
  const st = state.status;
  const s = st && st.services.find((x) => x.name === state.selected);
  if (!s) {
    $("service-detail").className = "hidden";
    return;
  }
  $("service-detail").className = "";
  $("detail-name").textContent = s.name;
  $("detail-vip").textContent = endpoint(s) + ", " + s.mode;
  $("detail-announce").textContent = (s.announced ? "Announced" : "Not announced") + (s.announce_reason ? ": " + s.announce_reason : "");
  const cfg = state.config.get(s.name);
  const how = probedBy(cfg);
  const r = state.rates.get(s.name);
  const filter = $("backends-filter").value.trim();
  const rows = s.backends.filter((b) => matches(filter, b.ip, b.health, b.state, b.forwarding, b.passive ? "passive held" : ""));
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  state.backendsPage = Math.min(state.backendsPage, pages - 1);
  $("backends-count").textContent = rows.length === s.backends.length ? "(" + rows.length + ")" : "(" + rows.length + " of " + s.backends.length + ")";
  pager("backends-pager", state.backendsPage, rows.length, (p) => {
    state.backendsPage = p;
    renderBackends();
  });
  const rw = state.token !== "";
  const body = el("tbody");
  for (const b of rows.slice(state.backendsPage * PAGE, (state.backendsPage + 1) * PAGE)) {
    const br = r ? r.backends.get(b.ip) : null;
    const weight = el("input", { type: "number", min: 0, max: 1000, value: b.weight, class: "control weight", "aria-label": "weight of " + b.ip, disabled: !rw });
    const act = (label, body) =>
      el("button", { type: "button", class: "control", "data-action": label, disabled: !rw, onclick: (ev) => { ev.stopPropagation(); change(s.name, b.ip, body()); } }, label);
    weight.addEventListener("click", (ev) => ev.stopPropagation());
    body.append(
      el(
        "tr",
        { class: "clickable" + (b.ip === state.selectedBackend ? " selected" : ""), "data-backend": b.ip, onclick: () => selectBackend(b.ip) },
        el("td", {}, b.ip),
        b.passive
          ? el("td", { class: "bad", title: b.passive }, "held down (passive)")
          : el("td", { class: b.health === "healthy" ? "good" : b.health === "unhealthy" ? "bad" : "" }, b.health),
        el("td", {}, how),
        el("td", {}, weight),
        el("td", { class: "state" }, b.state),
        el("td", { class: b.forwarding === "active" ? "good" : b.forwarding === "down" ? "bad" : "" }, b.forwarding),
        el("td", { class: "num", title: "flows Maglev assigned to the backend since start" }, si(b.new_flows)),
        el("td", { class: "num" }, br ? si(br.packets_per_second) : "-"),
        el("td", { class: "num" }, br ? si(br.bits_per_second) : "-"),
        el(
          "td",
          { class: "actions" },
          act("drain", () => ({ state: "drain" })),
          act("enable", () => ({ state: "enabled" })),
          act("disable", () => ({ state: "disabled" })),
          act("set weight", () => ({ weight: Number(weight.value) })),
        ),
      ),
    );
  }
  $("backends").replaceChild(body, $("backends").tBodies[0]);
  const bd = $("backend-detail");
  bd.className = state.selectedBackend && s.backends.some((b) => b.ip === state.selectedBackend) ? "" : "hidden";
  $("backend-name").textContent = state.selectedBackend || "";
}

function renderBGP() {
  const body = el("tbody");
  const sessions = (state.status && state.status.bgp) || [];
  if (sessions.length === 0) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no BGP speaker or no peers")));
  for (const p of sessions) {
    body.append(
      el(
        "tr",
        {},
        el("td", {}, p.address),
        el("td", {}, p.asn),
        el("td", { class: p.state === "established" ? "good" : "bad" }, p.state),
        el("td", { class: "num" }, p.state === "established" ? duration(p.uptime_seconds) : "-"),
        el("td", { class: "num" }, p.prefixes_sent),
      ),
    );
  }
  $("bgp").replaceChild(body, $("bgp").tBodies[0]);
}

// ---- events --------------------------------------------------------------------

function addEvent(e) {
  if (state.events.some((x) => x.seq === e.seq)) return;
  state.events.push(e);
  state.events.sort((a, b) => a.seq - b.seq);
  if (state.events.length > EVENTS_KEPT) state.events.splice(0, state.events.length - EVENTS_KEPT);
  const list = el("ol", { id: "events" });
  for (const x of state.events.slice().reverse()) {
    const data = x.data ? Object.entries(x.data).map(([k, v]) => k + "=" + v).join(" ") : "";
    list.append(
      el(
        "li",
        { class: "event kind-" + x.kind },
        el("time", { datetime: x.time }, new Date(x.time).toLocaleTimeString()),
        " ",
        el("span", { class: "kind" }, x.kind),
        " ",
        el("strong", {}, x.object),
        ": " + x.reason + (data ? " (" + data + ")" : ""),
      ),
    );
  }
  $("events").replaceWith(list);
}

// startEvents follows /api/v1/events when the API has it (its OpenAPI
// document lists it), else says so.
async function startEvents() {
  let doc;
  try {
    doc = await api("/api/v1/openapi.json");
  } catch (e) {
    $("events-note").textContent = "events unavailable: " + e.message;
    return;
  }
  if (!doc.paths || !doc.paths["/api/v1/events"]) {
    $("events-note").textContent = "This dsrlb has no event feed (/api/v1/events).";
    return;
  }
  let since = 0;
  try {
    const h = await api("/api/v1/events");
    for (const e of h.events || []) addEvent(e);
    if (state.events.length) since = state.events[state.events.length - 1].seq;
  } catch (e) {
    $("events-note").textContent = "events: " + e.message;
  }
  // The stream starts after the history loaded; on a reconnect the
  // browser resumes after the last event it got (Last-Event-ID).
  const src = new EventSource("/api/v1/events?follow=1&since=" + since);
  const onEvent = (m) => {
    try {
      addEvent(JSON.parse(m.data));
    } catch (e) {
      /* a malformed event is skipped */
    }
  };
  for (const kind of ["health", "config", "bgp", "passive", "message"]) src.addEventListener(kind, onEvent);
  src.onerror = () => {
    $("events-note").textContent = "event stream interrupted; reconnecting";
  };
  src.onopen = () => {
    $("events-note").textContent = "";
  };
}

// ---- selection and changes -------------------------------------------------

function select(name) {
  if (state.selected !== name) {
    state.selected = name;
    state.selectedBackend = null;
    state.backendsPage = 0;
    $("backends-filter").value = "";
  }
  renderServices();
  renderBackends();
  drawSelected();
}

function selectBackend(ip) {
  state.selectedBackend = ip;
  renderBackends();
  drawSelected();
}

function drawSelected() {
  const jobs = [];
  if (state.selected) {
    const q = "service=" + encodeURIComponent(state.selected);
    jobs.push(drawObject("service", q, true));
    if (state.selectedBackend) jobs.push(drawObject("backend", q + "&backend=" + encodeURIComponent(state.selectedBackend), false));
  }
  return Promise.all(jobs);
}

async function change(service, ip, body) {
  state.busy = true;
  applyMode();
  try {
    await api("/api/v1/services/" + encodeURIComponent(service) + "/backends/" + encodeURIComponent(ip), { method: "PATCH", body });
    say(service + " " + ip + ": " + Object.entries(body).map(([k, v]) => k + " " + v).join(", ") + " accepted", false);
    await refresh();
  } catch (e) {
    say(service + " " + ip + ": " + e.message, true);
  } finally {
    state.busy = false;
    applyMode();
  }
}

// ---- polling -------------------------------------------------------------------

async function refresh() {
  const [status, services, rates] = await Promise.all([api("/api/v1/status"), api("/api/v1/services"), api("/api/v1/rates")]);
  state.status = status;
  state.config = new Map(services.services.map((s) => [s.name, s]));
  state.rates = new Map(rates.services.map((s) => [s.name, { svc: s, backends: new Map(s.backends.map((b) => [b.ip, b])) }]));
  $("generation").textContent = "snapshot " + status.generation;
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  renderServices();
  // A weight being typed survives the refresh: the backends wait for it.
  const typing = document.activeElement && document.activeElement.classList.contains("weight");
  if (!typing) renderBackends();
  renderBGP();
  applyMode();
}

async function tick() {
  try {
    await refresh();
    await Promise.all([drawAppliance(), drawSelected()]);
    document.body.dataset.loaded = "true";
  } catch (e) {
    say("cannot read the API: " + e.message, true);
  }
  setTimeout(tick, POLL_MS);
}

$("services-filter").addEventListener("input", () => {
  state.servicesPage = 0;
  renderServices();
});
$("backends-filter").addEventListener("input", () => {
  state.backendsPage = 0;
  renderBackends();
});

applyMode();
tick();
startEvents();
