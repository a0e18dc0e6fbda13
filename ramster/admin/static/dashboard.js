// The ramster dashboard: polls /v1/cluster once a second and follows /v1/events/stream.
// Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const HISTORY_S = 300;
const RATES = [
  ["spilled_pages", "spill", "#3b6fd8"],
  ["loads", "load", "#1f9d55"],
  ["repaired_pages", "recovery", "#c53030"],
];
const samples = []; // {t, totals: {counter: sum over members}}

// A node that requires its admin token for reads: open the dashboard as /#token=TOKEN once;
// the token is kept for this tab only and never sent anywhere but this node.
const TOKEN = (() => {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("ramster-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("ramster-token");
})();
const AUTH = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function bar(kind, used, total, ephemeral = 0) {
  // The ephemeral share (cleancache pages, evicted first) is drawn lighter, at the bar's end.
  const part = (n) => (total ? Math.min(1, Math.max(0, n / total)) : 0);
  const eph = Math.min(ephemeral, used);
  const fill = el("span");
  fill.style.width = `${(part(used - eph) * 100).toFixed(1)}%`;
  const ephFill = el("span", { class: "ephemeral" });
  ephFill.style.left = fill.style.width;
  ephFill.style.width = `${(part(eph) * 100).toFixed(1)}%`;
  const title = `${bytes(used)} of ${bytes(total)}` + (eph ? `, ${bytes(eph)} of it ephemeral` : "");
  return el("span", {},
    el("span", { class: `bar ${kind}`, title }, fill, ephFill),
    el("span", { class: "barlabel" },
      `${bytes(used)} / ${bytes(total)}` + (eph ? ` (${bytes(eph)} ephemeral)` : "")));
}

function uptime(s) {
  if (s === null || s === undefined) return "–";
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function renderMembers(cluster) {
  const body = document.querySelector("#members tbody");
  body.replaceChildren(...cluster.members.map((m) => {
    const lentUsed = m.lent_used ?? (m.lent_budget ?? 0) - (m.lent_free ?? 0);
    return el("tr", { "data-node": m.node, "data-state": m.state, "data-role": m.role },
      el("td", {}, m.node),
      el("td", {}, el("span", { class: `badge ${m.state}` }, m.state + (m.draining ? " · draining" : ""))),
      el("td", {}, m.role),
      el("td", {}, bar("local", m.local_used ?? 0, m.local_budget ?? 0, m.local_ephemeral ?? 0)),
      el("td", {}, bar("lent", lentUsed, m.lent_budget ?? 0, m.lent_ephemeral ?? 0)),
      el("td", { class: "num" }, (m.lent_pages ?? 0).toLocaleString()),
      el("td", { class: "num" }, (m.under_replicated ?? 0).toLocaleString()),
      el("td", {}, uptime(m.uptime_s)));
  }));
  const alive = cluster.members.filter((m) => m.state === "alive").length;
  const repairing = cluster.rebalance.repairing_pages;
  document.getElementById("summary").textContent =
    `cluster ${cluster.cluster} · ${cluster.members.length} members, ${alive} alive · ` +
    `coordinator ${cluster.coordinator} (term ${cluster.term}) · ` +
    `${cluster.under_replicated_pages.toLocaleString()} pages under-replicated` +
    (repairing ? ` · repairing ${repairing.toLocaleString()}` : "");
}

function renderMatrix(cluster) {
  const owners = Object.keys(cluster.pages).sort();
  const holders = [...new Set(owners.flatMap((o) => Object.keys(cluster.pages[o])))].sort();
  const table = document.getElementById("matrix");
  table.tHead.replaceChildren(el("tr", {}, el("th", {}, "owner \\ holder"),
    ...holders.map((h) => el("th", { class: "num" }, h))));
  table.tBodies[0].replaceChildren(...owners.map((o) => el("tr", { "data-owner": o },
    el("th", {}, o),
    ...holders.map((h) => el("td", { class: "num" },
      (cluster.pages[o][h] ?? 0).toLocaleString())))));
  if (!owners.length) {
    table.tBodies[0].replaceChildren(el("tr", {}, el("td", {}, "no pages on holders yet")));
  }
}

function renderRates() {
  const box = document.getElementById("rates");
  const w = 520, h = 150;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  const legend = el("div", { class: "legend" });
  const now = samples.length ? samples[samples.length - 1].t : 0;
  const series = RATES.map(([key, label, color]) => {
    const points = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1], b = samples[i];
      const dt = (b.t - a.t) / 1000;
      if (dt > 0) points.push([b.t, Math.max(0, ((b.totals[key] ?? 0) - (a.totals[key] ?? 0)) / dt)]);
    }
    return { key, label, color, points };
  });
  const peak = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1])));
  for (const s of series) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", s.color);
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("points", s.points.map(([t, v]) =>
      `${(w - ((now - t) / 1000) * (w / HISTORY_S)).toFixed(1)},${(h - 4 - (v / peak) * (h - 10)).toFixed(1)}`).join(" "));
    svg.append(line);
    const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
    const item = el("span", { "data-rate": s.key }, `${s.label}: ${Math.round(last).toLocaleString()}/s`);
    item.style.color = s.color;
    legend.append(item);
  }
  legend.append(el("span", {}, `scale: ${Math.round(peak).toLocaleString()}/s`));
  box.replaceChildren(legend, svg);
}

function capacityCell(e) {
  // Its size against what the cluster can hold for it (the live holders' budgets over R).
  if (e.capacity_bytes === undefined) return el("td", { class: "num" }, "");
  const text = `${bytes(e.size)} / ${bytes(e.capacity_bytes)}`;
  if (e.fits) return el("td", { class: "num" }, text);
  return el("td", {
    class: "num oversized",
    title: `does not fit: the live holders' lent budgets over R=${e.replicas} hold ` +
      `${bytes(e.capacity_bytes)} of it; writes past that get ENOSPC`,
  }, `${text} ⚠ does not fit`);
}

async function pollExports() {
  // What this node serves in full; the others as the heartbeats name them (server, term).
  const r = await fetch("/v1/exports", { cache: "no-store", headers: AUTH });
  if (!r.ok) return;
  const view = await r.json();
  const served = Object.fromEntries(view.served.map((e) => [e.name, e]));
  const rows = Object.entries(view.servers).sort().map(([name, who]) => {
    const e = served[name] ?? {};
    const rb = e.rebuild && e.rebuild.pages_per_s !== undefined
      ? `${Math.round(e.rebuild.pages).toLocaleString()} pages, ${Math.round(e.rebuild.pages_per_s).toLocaleString()}/s`
      : "";
    return el("tr", { "data-export": name },
      el("td", {}, name), el("td", {}, who.server), el("td", { class: "num" }, String(who.term)),
      el("td", {}, e.durability ?? ""), el("td", {}, e.state ?? "serving"),
      capacityCell(e),
      el("td", { class: "num" }, e.pages === undefined ? "" : e.pages.toLocaleString()),
      el("td", { class: "num" }, e.under_replicated === undefined ? "" : e.under_replicated.toLocaleString()),
      el("td", { class: "num" }, e.pages_lost === undefined ? "" : e.pages_lost.toLocaleString()),
      el("td", {}, rb));
  });
  document.querySelector("#exports tbody").replaceChildren(...rows);
}

async function poll() {
  const conn = document.getElementById("connection");
  try {
    const r = await fetch("/v1/cluster", { cache: "no-store", headers: AUTH });
    if (r.status === 401) throw new Error("this node needs its admin token: open /#token=TOKEN");
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const cluster = await r.json();
    conn.textContent = `live · via ${cluster.answered_by}`;
    conn.dataset.ok = "true";
    const totals = {};
    for (const m of cluster.members) {
      if (m.state !== "alive" || !m.counters) continue;
      for (const [k, v] of Object.entries(m.counters)) totals[k] = (totals[k] ?? 0) + v;
    }
    samples.push({ t: Date.now(), totals });
    while (samples.length && samples[0].t < Date.now() - HISTORY_S * 1000) samples.shift();
    renderMembers(cluster);
    renderMatrix(cluster);
    renderRates();
    await pollExports();
  } catch (err) {
    conn.textContent = `offline (${err.message})`;
    conn.dataset.ok = "false";
  }
}

function addEvent(e) {
  const list = document.getElementById("events");
  const when = new Date(e.time * 1000).toLocaleTimeString();
  list.prepend(el("li", { class: e.kind, "data-kind": e.kind, "data-node": e.node },
    `${when}  ${e.kind.padEnd(14)} ${e.node}  ${e.detail}`));
  while (list.children.length > 200) list.lastChild.remove();
}

function follow() {
  // EventSource reconnects by itself and sends Last-Event-ID: no event is shown twice.
  const seen = new Set();
  // EventSource sends no headers: the stream also takes the token as a query parameter.
  const query = TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : "";
  const source = new EventSource(`/v1/events/stream${query}`);
  source.onmessage = (m) => {
    const e = JSON.parse(m.data);
    if (seen.has(e.id)) return;
    seen.add(e.id);
    addEvent(e);
  };
}

poll();
setInterval(poll, 1000);
follow();
