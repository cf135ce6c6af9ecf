// The status page: polls /admin/status every 2 s and draws it. No framework, no build step.
// Every value from the server goes in through textContent or SVG attributes, never as HTML.
"use strict";

const POLL_MS = 2000;
const KEY = "edge-gateway.admin-key";
const CLIENT_KEY = "edge-gateway.client-key";
const ROUTES = ["local", "cloud", "cache", "none"];
const COLORS = { local: "#2f9e44", cloud: "#1c7ed6", cache: "#9c36b5", none: "#868e96" };
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    node.append(c instanceof Node ? c : c === null || c === undefined ? "" : String(c));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "—";
}

function ago(t, now) {
  if (!t) return "since start";
  const s = Math.max(0, Math.round(now - t));
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function authHeaders(storageKey) {
  const key = sessionStorage.getItem(storageKey);
  return key ? { Authorization: "Bearer " + key } : {};
}

// -- sections ---------------------------------------------------------------------------------

function renderUplink(up, now) {
  const overall = $("uplink-state");
  const state = !up.configured ? "none" : up.reachable ? "up" : "down";
  overall.dataset.state = state;
  overall.textContent = "uplink: " + state;
  $("uplink-none").hidden = up.configured;
  fill($("uplink").tBodies[0], up.targets.map((t) => {
    const tr = el("tr", { "data-target": t.name, "data-state": t.state },
      el("td", {}, t.name), el("td"), el("td", {}, ago(t.changed_at, now)),
      el("td", {}, t.change_reason || (t.last_failure ? "last failure: " + t.last_failure : "")));
    tr.children[0].append(el("div", { class: "muted" }, (t.model || "") + (t.tier ? " · tier" : "")));
    tr.children[1].append(el("span", { class: "pill", "data-state": t.state }, t.state.replace("_", "-")));
    return tr;
  }));
}

function renderTraffic(tr) {
  $("recent-label").textContent = "last " + tr.last_minutes + " min";
  const routes = ROUTES.filter((r) => r !== "none" || tr.hour.routes.none);
  fill($("route-counts").tBodies[0], routes.map((r) => el("tr", { "data-route": r },
    el("td", { class: "route route-" + r }, r),
    el("td", { class: "num recent" }, tr.recent.routes[r] || 0),
    el("td", { class: "num hour" }, tr.hour.routes[r] || 0))));
  const rules = Object.keys(tr.hour.rules).sort((a, b) => tr.hour.rules[b] - tr.hour.rules[a]);
  fill($("rule-counts").tBodies[0], rules.map((r) => el("tr", { "data-rule": r },
    el("td", {}, r), el("td", { class: "num" }, tr.recent.rules[r] || 0),
    el("td", { class: "num" }, tr.hour.rules[r] || 0))));
  drawBars($("chart-requests"), tr.per_minute);
  drawLine($("chart-tps"), tr.per_minute.map((m) => m.local_tokens_per_s));
}

function facts(dl, pairs) {
  const nodes = [];
  for (const [k, v] of pairs) {
    nodes.push(el("dt", {}, k), el("dd", { "data-fact": k }, v === null || v === undefined ? "—" : v));
  }
  dl.replaceChildren(...nodes);
}

function renderLocal(l) {
  const file = l.file ? l.file.name + (l.file.size_mib ? " (" + l.file.size_mib + " MiB)" : "") : "—";
  facts($("local"), [
    ["model", l.model], ["state", l.ready ? "ready" : "loading"], ["file", file],
    ["slots busy", l.slots_busy + " / " + l.parallel],
    ["queue", l.queue_depth + " / " + l.queue_capacity],
    ["tokens/s", l.tokens_per_s === null ? "—" : l.tokens_per_s + " (last 5 min)"],
    ["context per slot", l.n_ctx_slot + " tokens"],
    ["KV cache", l.kv_mib === null ? "—" : l.kv_mib + " MiB"],
    ["process memory", l.rss_mib === null ? "—" : l.rss_mib + " MiB"],
  ]);
}

function renderCache(c) {
  const rate = c.hit_rate === null ? "—" : Math.round(c.hit_rate * 100) + " %";
  facts($("cache"), [
    ["store", c.store || "off (no cloud models)"], ["hit rate (hour)", rate],
    ["hits / misses / skips", c.hour.hit + " / " + c.hour.miss + " / " + c.hour.skip],
    ["semantic hits (hour)", c.semantic && c.semantic.enabled
      ? c.hour.semantic + " (" + c.semantic.entries + " questions indexed, encoder " + c.semantic.encoder + ")"
      : "off (policy semantic_cache)"],
    ["cloud tokens saved", c.tokens_saved_hour + " this hour, " + c.tokens_saved_total + " total"],
  ]);
}

function renderPolicy(p, now) {
  facts($("policy"), [
    ["file", p.file], ["default", p.default], ["cache", p.cache], ["scorer", p.scorer],
    ["offline", p.offline_order.join(" → ")],
    ["loaded", clock(p.loaded_at) + " (" + ago(p.loaded_at, now) + ")"],
  ]);
  const err = $("policy-error");
  err.hidden = !p.last_error;
  err.textContent = p.last_error ? "Last edit rejected (the policy above stays in force):\n" + p.last_error : "";
  $("rules").replaceChildren(...p.rules.map((r) => {
    const li = el("li", { "data-rule": r.name }, r.name + " → ");
    li.append(el("span", { class: "route route-" + (r.route === "local" ? "local" : "cloud") }, r.route));
    if (r.enforce) li.append(el("span", { class: "muted" }, " (enforced)"));
    return li;
  }));
}

// The route, and when a tier answered, the hop below: "cloud → regional: local (degraded)".
function routeCell(d) {
  const td = el("td", { class: "route route-" + d.route }, d.route + (d.cache ? " (" + d.cache + ")" : ""));
  const u = d.upstream;
  if (u) {
    const hop = u.tier + ": " + u.route + (u.degraded ? " (degraded)" : "");
    const chain = el("div", { class: "chain route-" + u.route, "data-tier": u.tier,
      "data-upstream-route": u.route, "data-upstream-degraded": String(u.degraded) }, "→ " + hop);
    if (u.via) chain.append(el("span", { class: "muted" }, " → " + u.via));
    if (u.reason) chain.title = u.reason;
    td.append(chain);
  }
  return td;
}

function renderRecent(list, showPrompts) {
  $("recent-empty").hidden = list.length > 0;
  fill($("recent").tBodies[0], list.map((d) => {
    const tr = el("tr", { "data-route": d.route, "data-status": d.status },
      el("td", {}, clock(d.time)), el("td", {}, d.model || d.path),
      routeCell(d),
      el("td", {}, d.rule), el("td", {}, (d.reason || "") + (d.failover ? " [" + d.failover + "]" : "")),
      el("td", {}, d.degraded ? "yes" : ""), el("td", { class: "num" }, Math.round(d.latency_ms) + " ms"),
      el("td", { class: "num" }, d.status));
    if (showPrompts && (d.prompt || d.answer)) {
      tr.children[4].append(el("div", { class: "muted" }, "» " + (d.prompt || "") + " « " + (d.answer || "")));
    }
    return tr;
  }));
}

// -- charts: plain inline SVG -------------------------------------------------------------------

function axes(box, max, w, h) {
  box.append(svg("line", { x1: 0, y1: h, x2: w, y2: h, stroke: "#ced4da" }));
  const top = svg("text", { x: 2, y: 9, "font-size": 9, fill: "#6b7480" });
  top.textContent = String(max);
  const left = svg("text", { x: 2, y: h + 12, "font-size": 9, fill: "#6b7480" });
  left.textContent = "-60 min";
  const right = svg("text", { x: w - 2, y: h + 12, "font-size": 9, fill: "#6b7480", "text-anchor": "end" });
  right.textContent = "now";
  box.append(top, left, right);
}

function drawBars(target, minutes) {
  const w = 300, h = 70, n = minutes.length, bw = w / n;
  const totals = minutes.map((m) => ROUTES.reduce((s, r) => s + (m.routes[r] || 0), 0));
  const max = Math.max(1, ...totals);
  const box = svg("svg", { viewBox: `0 0 ${w} ${h + 14}`, role: "img", "aria-label": "requests per minute" });
  minutes.forEach((m, i) => {
    let y = h;
    for (const r of ROUTES) {
      const v = m.routes[r] || 0;
      if (!v) continue;
      const bh = (v / max) * (h - 12);
      y -= bh;
      const rect = svg("rect", { x: i * bw + 0.5, y, width: Math.max(1, bw - 1), height: bh, fill: COLORS[r] });
      const tip = svg("title");
      tip.textContent = `${clock(m.t)} ${r}: ${v}`;
      rect.append(tip);
      box.append(rect);
    }
  });
  axes(box, max, w, h);
  target.replaceChildren(box);
  $("legend").replaceChildren(...ROUTES.slice(0, 3).map((r) => {
    const s = el("span", {}, r);
    s.style.color = COLORS[r];
    return s;
  }));
}

function drawLine(target, values) {
  const w = 300, h = 50, n = values.length;
  const max = Math.max(1, ...values.filter((v) => v !== null));
  const box = svg("svg", { viewBox: `0 0 ${w} ${h + 14}`, role: "img", "aria-label": "local tokens per second" });
  let d = "";
  values.forEach((v, i) => {
    if (v === null) return;
    const x = (i + 0.5) * (w / n), y = h - (v / max) * (h - 12);
    d += (d ? " L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    box.append(svg("circle", { cx: x, cy: y, r: 2, fill: COLORS.local }));
  });
  if (d) box.append(svg("path", { d, fill: "none", stroke: COLORS.local, "stroke-width": 1.5 }));
  axes(box, Math.round(max), w, h);
  target.replaceChildren(box);
}

// The routing curve of the box's own labels (/admin/routing-curve): quality against cloud share.
const CURVE_COLORS = { "policy scorer": "#1c7ed6", "prompt-length": "#495057", random: "#adb5bd" };
const CURVE_DASH = { "policy scorer": "", "prompt-length": "4 3", random: "2 3" };

function drawCurve(target, c) {
  const w = 300, h = 200, pad = 24;
  const px = (x) => pad + x * (w - pad - 6), py = (y) => h - pad - y * (h - pad - 8);
  const names = Object.keys(c.series);
  const box = svg("svg", {
    viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": "routing curve", "data-series": names.join(","),
  });
  box.append(svg("line", { x1: px(0), y1: py(0), x2: px(1), y2: py(0), stroke: "#ced4da" }));
  box.append(svg("line", { x1: px(0), y1: py(0), x2: px(0), y2: py(1), stroke: "#ced4da" }));
  for (const [x, y, text, anchor] of [[0, -0.09, "0", "middle"], [1, -0.09, "100% to cloud", "end"], [-0.02, 1, "1", "end"]]) {
    const t = svg("text", { x: px(x), y: py(y) + 3, "font-size": 9, fill: "#6b7480", "text-anchor": anchor });
    t.textContent = text;
    box.append(t);
  }
  for (const name of names) {
    const pts = c.series[name];
    if (!pts.length) continue;
    const d = pts.map(([x, y], i) => (i ? "L" : "M") + px(x).toFixed(1) + " " + py(y).toFixed(1)).join(" ");
    const path = svg("path", {
      d, fill: "none", stroke: CURVE_COLORS[name] || "#000", "stroke-width": name === "policy scorer" ? 2 : 1.2,
      "stroke-dasharray": CURVE_DASH[name] || "", "data-series": name,
    });
    const tip = svg("title");
    tip.textContent = name + (c.apgr && c.apgr[name] !== undefined ? " (APGR " + c.apgr[name] + ")" : "");
    path.append(tip);
    box.append(path);
  }
  if (c.threshold) {
    const t = c.threshold;
    const dot = svg("circle", {
      id: "curve-threshold", cx: px(t.share), cy: py(t.recovered), r: 4, fill: "crimson",
      "data-share": t.share, "data-complexity": t.complexity,
    });
    const tip = svg("title");
    tip.textContent = `complexity >= ${t.complexity}: ${Math.round(t.share * 100)}% to the cloud`;
    dot.append(tip);
    box.append(dot);
  }
  target.replaceChildren(box);
  $("curve-legend").replaceChildren(...names.map((n) => {
    const s = el("span", { "data-series": n }, n + (c.apgr && c.apgr[n] !== undefined ? " " + c.apgr[n] : ""));
    s.style.color = CURVE_COLORS[n] || "#000";
    return s;
  }));
}

function renderCurve(c) {
  const note = $("curve-note");
  if (!c.ready) {
    $("chart-curve").replaceChildren();
    $("curve-legend").replaceChildren();
    note.textContent = c.enabled ? "No curve yet: " + c.reason + "." : "Learning is off: the box keeps no labels to draw a curve from.";
    return;
  }
  drawCurve($("chart-curve"), c);
  const t = c.threshold;
  note.textContent = c.labels + " labels, scorer: " + c.scorer + ". " + (t
    ? `The policy's complexity >= ${t.complexity} sends ${Math.round(t.share * 100)}% to the cloud and recovers ${Math.round(t.recovered * 100)}% of what the cloud would add.`
    : "The policy has no complexity threshold.");
}

const CURVE_EVERY = 8; // polls: the curve changes only as labels arrive
let curvePolls = 0;

async function pollCurve() {
  try {
    const r = await fetch("/admin/routing-curve", { headers: authHeaders(KEY), cache: "no-store" });
    if (r.ok) renderCurve(await r.json());
  } catch (e) {
    // The status poll reports an unreachable gateway; the curve just stays as it was.
  }
}

// -- polling and the key prompt -------------------------------------------------------------------

function showKeyPrompt(message) {
  $("dashboard").hidden = true;
  $("key-prompt").hidden = false;
  $("key-forget").hidden = true;
  $("key-message").textContent = message;
  // No data may linger from an earlier key.
  for (const id of ["uplink", "route-counts", "rule-counts", "recent"]) fill($(id).tBodies[0], []);
  $("chart-curve").replaceChildren();
  curvePolls = 0;
}

let timer = null;

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

async function poll() {
  try {
    const r = await fetch("/admin/status", { headers: authHeaders(KEY), cache: "no-store" });
    if (r.status === 401 || r.status === 403) {
      const body = await r.json().catch(() => ({}));
      const had = sessionStorage.getItem(KEY);
      const msg = (body.error && body.error.message) || "An admin key is required.";
      showKeyPrompt(had ? "That key was not accepted: " + msg : msg);
      $("updated").textContent = "locked";
      return;
    }
    if (!r.ok) throw new Error("status " + r.status);
    render(await r.json());
    $("error").hidden = true;
    if (curvePolls++ % CURVE_EVERY === 0) await pollCurve();
  } catch (e) {
    $("error").hidden = false;
    $("error").textContent = "Cannot reach the gateway: " + e.message + " (retrying)";
  } finally {
    schedule(POLL_MS);
  }
}

function render(s) {
  $("key-prompt").hidden = true;
  $("dashboard").hidden = false;
  $("key-forget").hidden = !sessionStorage.getItem(KEY);
  renderUplink(s.uplink, s.now);
  renderTraffic(s.traffic);
  renderLocal(s.local);
  renderCache(s.cache);
  renderPolicy(s.policy, s.now);
  renderRecent(s.recent, s.show_prompts);
  $("updated").textContent = "updated " + clock(s.now) + (s.draining ? " · draining" : "");
}

// -- try it -----------------------------------------------------------------------------------------

function tryBody(extra) {
  return JSON.stringify({
    model: $("try-model").value.trim() || "auto",
    messages: [{ role: "user", content: $("try-prompt").value }],
    ...extra,
  });
}

async function tryIt(path, extra) {
  const key = $("try-key").value.trim();
  if (key) sessionStorage.setItem(CLIENT_KEY, key); else sessionStorage.removeItem(CLIENT_KEY);
  const out = $("try-out");
  out.hidden = false;
  out.textContent = "…";
  try {
    const r = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders(CLIENT_KEY) },
      body: tryBody(extra),
    });
    const body = await r.json().catch(() => null);
    const lines = ["HTTP " + r.status];
    for (const [k, v] of r.headers) if (k.startsWith("x-")) lines.push(k + ": " + v);
    const msg = body && body.choices && body.choices[0] && body.choices[0].message;
    if (msg) lines.push("", msg.content || "");
    lines.push("", JSON.stringify(body, null, 2));
    out.textContent = lines.join("\n");
  } catch (e) {
    out.textContent = "Request failed: " + e.message;
  }
}

function start() {
  $("try-key").value = sessionStorage.getItem(CLIENT_KEY) || "";
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key-input").value.trim();
    if (key) sessionStorage.setItem(KEY, key);
    $("key-input").value = "";
    $("key-prompt").hidden = true;
    schedule(0);
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showKeyPrompt("Key forgotten.");
  });
  $("try-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    tryIt("/v1/route", {});
  });
  $("try-answer").addEventListener("click", () => tryIt("/v1/chat/completions", { max_tokens: 128 }));
  schedule(0);
}

start();
