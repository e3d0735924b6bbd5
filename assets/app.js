// willwatch's live page: reads /status (a page at a time, offline first),
// /api/bars and /api/uptime, and follows /api/events to update within a
// second of a transition. No framework, no build step.
"use strict";

const PAGE = 100;
const view = { q: "", state: "", loaded: PAGE, next: null };
const rows = new Map(); // device id -> its <tr>
let refreshTimer = null;

const $ = (id) => document.getElementById(id);

function theme() {
  const wanted = new URLSearchParams(location.search).get("theme");
  if (wanted === "dark" || wanted === "light") document.documentElement.dataset.theme = wanted;
}

function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function why(d) {
  if (d.state !== "offline") return d.grace_left != null ? `grace ${Math.ceil(d.grace_left)}s left` : "";
  if (d.cause) return d.cause;
  if (d.last_payload === "(silent)") return "silence";
  return d.last_payload ? `will: ${d.last_payload}` : "will";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function bar(cls) {
  const td = document.createElement("td");
  td.className = `bar ${cls}`;
  const span = document.createElement("span");
  span.className = "slots";
  const pct = document.createElement("span");
  pct.className = "pct";
  pct.textContent = "";
  td.append(span, pct);
  return td;
}

function row(d) {
  const tr = document.createElement("tr");
  tr.dataset.id = d.id;
  tr.append(cell(d.id, "id"), cell("", "state"), cell("", "since"), cell("", "why"), bar("day"), bar("week"));
  fill(tr, d);
  return tr;
}

function fill(tr, d) {
  tr.dataset.state = d.state;
  tr.dataset.since = d.since || "";
  const state = tr.querySelector(".state");
  state.textContent = d.state + (d.notified ? " ●" : "");
  state.title = d.notified ? "its offline was notified" : "";
  tr.querySelector(".since").textContent = ago(d.since);
  tr.querySelector(".why").textContent = why(d);
  tr.querySelector(".why").title = d.topic || "";
}

async function json(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

function query(limit, after) {
  const p = new URLSearchParams({ limit: String(limit) });
  if (view.q) p.set("q", view.q);
  if (view.state) p.set("state", view.state);
  if (after) p.set("after", after);
  return `/status?${p}`;
}

function counts(doc) {
  for (const k of ["online", "offline", "unknown", "notified"]) $(`n-${k}`).textContent = doc.counts[k];
  const link = $("link");
  link.textContent = doc.broker.connected ? `broker ${doc.broker.url}: connected` : `broker ${doc.broker.url}: NOT connected since ${doc.broker.since}`;
  link.classList.toggle("down", !doc.broker.connected);
}

// Reads the devices shown (as many as loaded), replacing the rows in place.
async function refresh() {
  const doc = await json(query(view.loaded));
  counts(doc);
  const body = $("rows");
  const seen = new Set();
  let i = 0;
  for (const d of doc.devices) {
    seen.add(d.id);
    let tr = rows.get(d.id);
    if (tr) fill(tr, d); else { tr = row(d); rows.set(d.id, tr); }
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
    i++;
  }
  for (const [id, tr] of rows) if (!seen.has(id)) { tr.remove(); rows.delete(id); }
  view.next = doc.next;
  $("more").hidden = !doc.next;
  $("empty").hidden = doc.devices.length > 0;
  bars(doc.devices.map((d) => d.id));
}

// At most one read every `ms` while transitions stream in (a storm must
// not starve the page of updates); `now` replaces a pending one (the
// filter changed).
function scheduleRefresh(ms = 250, now = false) {
  if (refreshTimer && !now) return;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh().catch(offlineBanner); }, ms);
}

async function more() {
  if (!view.next) return;
  view.loaded += PAGE;
  await refresh();
}

function slotClass(u) {
  if (u == null) return "none";
  if (u >= 0.999) return "up";
  if (u >= 0.9) return "some";
  return "down";
}

function paint(td, slots, uptime) {
  const box = td.querySelector(".slots");
  box.replaceChildren(...slots.map((u) => {
    const s = document.createElement("i");
    s.className = slotClass(u);
    s.title = u == null ? "nothing known" : `${(u * 100).toFixed(2)}%`;
    return s;
  }));
  td.querySelector(".pct").textContent = uptime == null ? "–" : `${(uptime * 100).toFixed(uptime >= 0.9995 ? 0 : 2)}%`;
}

let historyOff = false;
async function bars(ids) {
  if (historyOff || ids.length === 0) return;
  for (let i = 0; i < ids.length; i += 200) {
    const p = new URLSearchParams();
    for (const id of ids.slice(i, i + 200)) p.append("id", id);
    let list;
    try { list = await json(`/api/bars?${p}`); } catch { historyOff = true; return; }
    for (const b of list) {
      const tr = rows.get(b.id);
      if (!tr) continue;
      paint(tr.querySelector(".day"), b.day, b.day_uptime);
      paint(tr.querySelector(".week"), b.week, b.week_uptime);
    }
  }
}

async function flappy() {
  const list = $("flappy");
  try {
    const doc = await json("/api/uptime?since=7d&sort=outages&limit=10");
    list.replaceChildren(...(doc.devices.length ? doc.devices : [null]).map((d) => {
      const li = document.createElement("li");
      if (!d) { li.textContent = "no outage this week"; li.className = "muted"; return li; }
      li.textContent = `${d.id}: ${d.outages} outage${d.outages === 1 ? "" : "s"}`;
      return li;
    }));
  } catch {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "history is off";
    list.replaceChildren(li);
  }
}

function offlineBanner() {
  const link = $("link");
  link.textContent = "willwatch is not answering; retrying…";
  link.classList.add("down");
}

function live() {
  const events = new EventSource("/api/events");
  events.addEventListener("hello", () => scheduleRefresh(0, true));
  events.addEventListener("transition", (e) => {
    const t = JSON.parse(e.data);
    const tr = rows.get(t.device);
    if (tr) {
      tr.dataset.state = t.to;
      tr.querySelector(".state").textContent = t.to;
      tr.querySelector(".since").textContent = ago(t.at);
      tr.dataset.since = t.at;
    }
    scheduleRefresh();
  });
  events.addEventListener("resync", () => scheduleRefresh(0, true));
  events.onerror = offlineBanner;
}

function init() {
  theme();
  // A notification's link opens the page filtered to its device: ?q=ID.
  view.q = (new URLSearchParams(location.search).get("q") || "").trim();
  $("filter").value = view.q;
  let typing = null;
  $("filter").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { view.q = e.target.value.trim(); view.loaded = PAGE; scheduleRefresh(0, true); }, 200);
  });
  $("state").addEventListener("change", (e) => { view.state = e.target.value; view.loaded = PAGE; scheduleRefresh(0, true); });
  for (const b of document.querySelectorAll("button.count")) {
    b.addEventListener("click", () => { $("state").value = b.dataset.state; $("state").dispatchEvent(new Event("change")); });
  }
  $("more").addEventListener("click", () => more().catch(offlineBanner));
  setInterval(() => { for (const tr of rows.values()) tr.querySelector(".since").textContent = ago(tr.dataset.since); }, 1000);
  setInterval(flappy, 60000);
  setInterval(() => bars([...rows.keys()]), 60000);
  refresh().catch(offlineBanner);
  flappy();
  live();
}

document.addEventListener("DOMContentLoaded", init);
