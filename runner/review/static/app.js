// seedbatch view: runs, gallery (filters, A/B grid), compare, viewer with keyboard verdicts.
// Plain script, no build step, nothing loaded from elsewhere. Text is always set through
// textContent: prompts and names are data, never markup.
"use strict";

const PAGE_SIZE = 120;
const POLL_MS = 2000;
const state = { route: null, runs: [], run: null, filters: {}, mode: "gallery", gridX: null,
  gridY: null, page: 0, items: [], viewerAt: -1, timer: null, noteTimer: null };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function setStatus(text, isError) {
  const el = document.getElementById("status");
  el.textContent = text || "";
  el.className = isError ? "error" : "";
}

function money(usd, credits) {
  const parts = [];
  if (usd) parts.push("$" + Number(usd).toFixed(4));
  if (credits) parts.push(Number(credits) + " credits");
  return parts.length ? parts.join(" + ") : "—";
}

function when(text) { return text ? String(text).replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "—"; }
function enc(path) { return path.split("/").map(encodeURIComponent).join("/"); }
function thumbURL(runId, path) { return `/thumb/${encodeURIComponent(runId)}/${enc(path)}`; }
function imageURL(runId, path) { return `/image/${encodeURIComponent(runId)}/${enc(path)}`; }

function verdictText(v) {
  if (!v || (!v.verdict && !v.stars && !v.note)) return "";
  const parts = [];
  if (v.verdict) parts.push(v.verdict === "pick" ? "✔ pick" : "✘ reject");
  if (v.stars) parts.push("★".repeat(v.stars));
  if (v.note) parts.push("✎");
  return (v.previous ? "previous: " : "") + parts.join(" ");
}

function verdictBadge(v) {
  const cls = ["verdict", v && v.verdict ? v.verdict : "", v && v.previous ? "previous" : ""];
  return h("span", { class: cls.join(" ").trim(), text: verdictText(v) });
}

function crumbs(...parts) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(...parts.map(([text, href]) => href ? h("a", { href, text }) : h("span", { text })));
}

// -- routing -------------------------------------------------------------------------------

function parseRoute() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "run" && parts[1]) return { name: "run", run: parts[1], params };
  if (parts[0] === "compare") return { name: "compare", params };
  return { name: "runs", params };
}

function schedule(fn) {
  clearTimeout(state.timer);
  state.timer = setTimeout(fn, POLL_MS);
}

async function route() {
  clearTimeout(state.timer);
  closeViewer();
  state.route = parseRoute();
  try {
    if (state.route.name === "run") await showRun(state.route.run, true);
    else if (state.route.name === "compare") await showCompare(state.route.params);
    else await showRuns();
    setStatus("");
  } catch (err) {
    document.getElementById("main").replaceChildren(h("p", { class: "error", text: String(err.message || err) }));
  }
}

// -- runs ----------------------------------------------------------------------------------

async function showRuns() {
  crumbs(["runs"]);
  const data = await getJSON("/api/runs");
  state.runs = data.runs;
  renderRuns(data);
  schedule(() => showRuns().catch((e) => setStatus(e.message, true)));
}

function renderRuns(data) {
  const main = document.getElementById("main");
  if (!data.runs.length) {
    main.replaceChildren(h("p", { class: "muted", text: `No runs under ${data.runs_dir} yet: seedbatch run MANIFEST` }));
    return;
  }
  const rows = data.runs.map((r) => h("tr", { "data-run": r.id },
    h("td", {}, h("a", { href: `#/run/${encodeURIComponent(r.id)}`, text: r.name }),
      r.emulated ? h("span", { class: "badge emulated", text: "emulated" }) : null,
      r.running ? h("span", { class: "badge running", text: "running" }) : null,
      h("div", { class: "muted", text: r.id })),
    h("td", { text: when(r.started_at) }),
    h("td", { class: "num", text: r.jobs }),
    h("td", { class: "num ok", text: r.succeeded }),
    h("td", { class: "num failed", text: r.failed }),
    h("td", { class: "num", text: r.images }),
    h("td", { class: "num", text: money(r.cost_usd, r.credits) })));
  const table = h("table", { id: "runs" },
    h("thead", {}, h("tr", {}, ...["run", "started", "jobs", "succeeded", "failed", "images", "spend"]
      .map((t, i) => h("th", { class: i > 1 ? "num" : null, text: t })))),
    h("tbody", {}, rows));
  const pick = (id, chosen) => h("select", { id }, data.runs.map((r) =>
    h("option", { value: r.id, selected: r.id === chosen, text: `${r.name} · ${when(r.started_at)}` })));
  const first = data.runs[0];
  const second = data.runs.find((r) => r.id !== first.id && r.name === first.name) || data.runs[1] || first;
  const selA = pick("compare-a", second.id);
  const selB = pick("compare-b", first.id);
  const form = h("div", { class: "bar" }, h("label", {}, "older (A)", selA), h("label", {}, "newer (B)", selB),
    h("button", { type: "button", id: "compare-go", onclick: () => {
      location.hash = `#/compare?a=${encodeURIComponent(selA.value)}&b=${encodeURIComponent(selB.value)}`;
    } }, "Compare runs"));
  main.replaceChildren(h("h1", { text: "Runs" }), table, h("h2", { text: "Compare two runs" }), form);
}

// -- one run: gallery and grid ------------------------------------------------------------

async function showRun(runId, fresh) {
  const data = await getJSON(`/api/runs/${encodeURIComponent(runId)}`);
  if (!fresh && state.viewerAt >= 0 && state.run && state.run.run.id === runId) {
    // the viewer is open: keep its list as it is, look again later
    schedule(() => showRun(runId, false).catch((e) => setStatus(e.message, true)));
    return;
  }
  const changed = !state.run || state.run.run.id !== runId || state.run.run.stamp !== data.run.stamp || fresh;
  if (fresh || !state.run || state.run.run.id !== runId) {
    state.filters = {};
    state.page = 0;
    state.mode = state.route.params.get("mode") === "grid" ? "grid" : "gallery";
    const ranked = rankAxes(data);
    state.gridX = state.route.params.get("x") || ranked[0] || null;
    state.gridY = state.route.params.get("y") || ranked[1] || null;
  }
  state.run = data;
  if (changed) renderRun();
  if (data.run.running) {
    schedule(() => showRun(runId, false).catch((e) => setStatus(e.message, true)));
  }
}

function axisValues(data, axis) {
  const seen = [];
  for (const job of data.jobs) {
    const v = job.axes[axis];
    if (v !== undefined && !seen.includes(v)) seen.push(v);
  }
  return seen;
}

function rankAxes(data) {
  const counts = data.axes.map((a, i) => [a, axisValues(data, a).length, i]).filter((x) => x[1] >= 2);
  counts.sort((p, q) => q[1] - p[1] || p[2] - q[2]);
  return counts.map((x) => x[0]);
}

function modelsOf(data) {
  return [...new Set(data.jobs.map((j) => j.model))];
}

function matches(job, output) {
  const f = state.filters;
  if (f.model && job.model !== f.model) return false;
  if (f.status && job.status !== f.status) return false;
  for (const axis of state.run.axes) {
    const want = f["axis:" + axis];
    if (want && job.axes[axis] !== want) return false;
  }
  if (f.verdict) {
    const v = output ? (output.previous ? "previous" : output.verdict || "none") : "none";
    if (f.verdict !== v) return false;
  }
  return true;
}

// The filtered items: one per output, and one per job without outputs (failed, pending…)
function filteredItems() {
  const items = [];
  for (const job of state.run.jobs) {
    if (job.outputs.length) {
      for (const output of job.outputs) if (matches(job, output)) items.push({ job, output });
    } else if (matches(job, null)) items.push({ job, output: null });
  }
  return items;
}

function select(id, label, options, value, onchange) {
  const el = h("select", { id, onchange: (e) => onchange(e.target.value) },
    options.map(([v, text]) => h("option", { value: v, selected: v === value, text })));
  return h("label", {}, label, el);
}

function renderRun() {
  const data = state.run;
  const run = data.run;
  crumbs(["runs", "#/"], [run.name]);
  const main = document.getElementById("main");
  const f = state.filters;
  const rerender = () => { state.page = 0; renderRun(); };
  const filters = h("div", { class: "bar", id: "filters" },
    select("f-model", "model", [["", "all models"], ...modelsOf(data).map((m) => [m, m])], f.model || "",
      (v) => { f.model = v; rerender(); }),
    ...data.axes.filter((a) => a !== "model").map((axis) => select(`f-axis-${axis}`, axis,
      [["", "all"], ...axisValues(data, axis).map((v) => [v, v])], f["axis:" + axis] || "",
      (v) => { f["axis:" + axis] = v; rerender(); })),
    select("f-status", "status", [["", "any status"], ...["succeeded", "failed", "unknown", "pending", "cancelled", "skipped"].map((s) => [s, s])],
      f.status || "", (v) => { f.status = v; rerender(); }),
    select("f-verdict", "verdict", [["", "any verdict"], ["pick", "picked"], ["reject", "rejected"], ["none", "not judged"], ["previous", "previous (spec changed)"]],
      f.verdict || "", (v) => { f.verdict = v; rerender(); }),
    h("button", { type: "button", id: "mode-gallery", "aria-pressed": String(state.mode === "gallery"),
      onclick: () => { state.mode = "gallery"; renderRun(); } }, "Gallery"),
    h("button", { type: "button", id: "mode-grid", "aria-pressed": String(state.mode === "grid"),
      onclick: () => { state.mode = "grid"; renderRun(); } }, "A/B grid"));
  const summary = h("p", {}, h("strong", { text: run.name }),
    run.emulated ? h("span", { class: "badge emulated", text: "emulated" }) : null,
    run.running ? h("span", { class: "badge running", text: "running" }) : null,
    ` · ${run.jobs} jobs, ${run.succeeded} succeeded, ${run.failed} failed · ${run.images} images · ${money(run.cost_usd, run.credits)} · started ${when(run.started_at)}`,
    h("br"), h("span", { class: "muted", text: data.picks_file ? `verdicts: ${data.picks_file}` : "verdicts cannot be saved: no manifest path" }));
  state.items = filteredItems();
  const body = state.mode === "grid" ? renderGrid() : renderGallery();
  main.replaceChildren(summary, filters, body, renderCompareValues());
}

function card(item, position) {
  const { job, output } = item;
  const classes = ["card", output && output.verdict && !output.previous ? output.verdict : "", output ? "" : "failed"];
  const picture = output
    ? h("img", { src: thumbURL(state.run.run.id, output.path), alt: `${job.name} #${output.index}`, loading: "lazy", decoding: "async" })
    : h("div", { class: "placeholder", text: `${job.status}${job.error ? ": " + job.error : ""}` });
  const el = h("div", { class: classes.join(" ").trim(), tabindex: output ? "0" : null,
    "data-key": job.key, "data-index": output ? output.index : null, "data-name": job.name },
    picture,
    h("div", { class: "name", text: job.name + (job.outputs.length > 1 && output ? ` #${output.index}` : "") }),
    h("div", { class: "muted", text: `${job.model} · ${money(job.cost_usd, job.credits)}${job.emulated ? " · emulated" : ""}` }),
    h("div", { class: "prompt", text: job.prompt }),
    output ? verdictBadge(output) : null);
  if (output) {
    el.addEventListener("click", () => openViewer(position));
    el.addEventListener("keydown", (e) => { if (e.key === "Enter") openViewer(position); });
  }
  return el;
}

function renderGallery() {
  const items = state.items;
  const pages = Math.max(1, Math.ceil(items.length / PAGE_SIZE));
  state.page = Math.min(state.page, pages - 1);
  const start = state.page * PAGE_SIZE;
  const cards = items.slice(start, start + PAGE_SIZE).map((item, i) => card(item, start + i));
  const go = (delta) => { state.page = Math.max(0, Math.min(pages - 1, state.page + delta)); renderRun(); window.scrollTo(0, 0); };
  const pager = h("div", { id: "pager" },
    h("button", { type: "button", id: "page-prev", disabled: state.page === 0, onclick: () => go(-1) }, "← previous"),
    h("span", { id: "page-info", text: `page ${state.page + 1} of ${pages} · ${items.length} shown` }),
    h("button", { type: "button", id: "page-next", disabled: state.page >= pages - 1, onclick: () => go(1) }, "next →"));
  return h("section", { id: "gallery" }, items.length ? h("div", { class: "cards" }, cards) : h("p", { class: "muted", text: "Nothing matches these filters." }), pager);
}

function renderGrid() {
  const data = state.run;
  const axes = data.axes;
  const options = axes.map((a) => [a, `${a} (${axisValues(data, a).length})`]);
  const controls = h("div", { class: "bar" },
    select("grid-x", "across (x)", options, state.gridX || "", (v) => { state.gridX = v; if (state.gridY === v) state.gridY = axes.find((a) => a !== v) || null; renderRun(); }),
    select("grid-y", "down (y)", [["", "—"], ...options.filter(([a]) => a !== state.gridX)], state.gridY || "", (v) => { state.gridY = v || null; renderRun(); }));
  if (!state.gridX) return h("section", {}, controls, h("p", { class: "muted", text: "No axis has two values." }));
  const xs = axisValues(data, state.gridX);
  const ys = state.gridY ? axisValues(data, state.gridY) : [null];
  const positions = new Map(state.items.map((item, i) => [item, i]));
  const head = h("tr", {}, h("th", { text: state.gridY ? `${state.gridY} \\ ${state.gridX}` : state.gridX }),
    xs.map((x) => h("th", { class: "col", text: x })));
  const rows = ys.map((y) => h("tr", {}, h("th", { class: "row", text: y === null ? "" : y }),
    xs.map((x) => {
      const here = state.items.filter((it) => it.job.axes[state.gridX] === x && (y === null || it.job.axes[state.gridY] === y));
      return h("td", { class: "cell", "data-x": x, "data-y": y === null ? null : y },
        h("div", { class: "thumbs" }, here.map((it) => card(it, positions.get(it)))));
    })));
  return h("section", {}, controls, h("table", { id: "grid" }, h("thead", {}, head), h("tbody", {}, rows)));
}

function renderCompareValues() {
  const data = state.run;
  const usable = data.axes.filter((a) => axisValues(data, a).length >= 2);
  if (!usable.length) return h("div");
  const axisSel = h("select", { id: "cv-axis" }, usable.map((a) => h("option", { value: a, text: a })));
  const valA = h("select", { id: "cv-a" });
  const valB = h("select", { id: "cv-b" });
  const fill = () => {
    const values = axisValues(data, axisSel.value);
    valA.replaceChildren(...values.map((v) => h("option", { value: v, text: v })));
    valB.replaceChildren(...values.map((v, i) => h("option", { value: v, text: v, selected: i === 1 })));
  };
  axisSel.addEventListener("change", fill);
  fill();
  return h("section", {}, h("h2", { text: "Compare two values" }), h("div", { class: "bar" },
    h("label", {}, "axis", axisSel), h("label", {}, "A", valA), h("label", {}, "B", valB),
    h("button", { type: "button", id: "cv-go", onclick: () => {
      const q = new URLSearchParams({ run: data.run.id, axis: axisSel.value, a: valA.value, b: valB.value });
      location.hash = "#/compare?" + q.toString();
    } }, "Compare")));
}

// -- compare -------------------------------------------------------------------------------

function side(runId, job) {
  if (!job) return h("td", { class: "muted", text: "(no such job)" });
  const out = job.outputs[0];
  return h("td", { "data-key": job.key },
    out ? h("img", { src: thumbURL(runId, out.path), alt: job.name, loading: "lazy" })
      : h("div", { class: "placeholder", text: job.status }),
    h("div", { class: "name", text: job.name }),
    h("div", { class: "muted", text: `${job.model} · ${money(job.cost_usd, job.credits)}` }),
    out ? verdictBadge(out) : null);
}

async function showCompare(params) {
  const data = await getJSON("/api/compare?" + params.toString());
  const main = document.getElementById("main");
  let runA, runB, title;
  if (data.mode === "runs") {
    runA = data.a.id; runB = data.b.id;
    title = `${data.a.name} (${when(data.a.started_at)}) ↔ ${data.b.name} (${when(data.b.started_at)})`;
    crumbs(["runs", "#/"], ["compare runs"]);
  } else {
    runA = runB = data.run.id;
    title = `${data.run.name}: ${data.axis} = ${data.a} ↔ ${data.b}`;
    crumbs(["runs", "#/"], [data.run.name, `#/run/${encodeURIComponent(data.run.id)}`], ["compare values"]);
  }
  const rows = data.rows.map((row) => h("tr", { class: "row", "data-label": row.label },
    h("th", {}, row.label, row.key_changed ? h("span", { class: "badge changed", text: "spec changed" }) : null),
    side(runA, row.a), side(runB, row.b),
    h("td", {}, row.diff.length
      ? h("ul", { class: "diff" }, row.diff.map((d) => h("li", { "data-field": d.field }, h("strong", { text: d.field }), ": ",
        h("code", { text: d.a }), " → ", h("code", { text: d.b }))))
      : h("span", { class: "muted", text: row.a && row.b ? "same spec" : "" }))));
  const summary = data.mode === "runs"
    ? h("p", { id: "compare-summary", text: `${data.rows.length} jobs · ${data.changed} with a changed spec · ${data.only_a} only in A · ${data.only_b} only in B` })
    : h("p", { id: "compare-summary", text: `${data.rows.length} pairs` });
  main.replaceChildren(h("h1", { text: title }), summary,
    h("table", { id: "compare-table", class: "compare" },
      h("thead", {}, h("tr", {}, h("th", { text: "job" }), h("th", { text: "A" }), h("th", { text: "B" }), h("th", { text: "what differs" }))),
      h("tbody", {}, rows)));
}

// -- viewer --------------------------------------------------------------------------------

function viewable() { return state.items.map((it, i) => [it, i]).filter(([it]) => it.output); }

function openViewer(position) {
  state.viewerAt = position;
  document.getElementById("viewer").hidden = false;
  renderViewer();
}

function closeViewer() {
  const el = document.getElementById("viewer");
  if (el) el.hidden = true;
  state.viewerAt = -1;
}

function renderViewer() {
  const item = state.items[state.viewerAt];
  if (!item || !item.output) return;
  const { job, output } = item;
  const list = viewable();
  const ordinal = list.findIndex(([, i]) => i === state.viewerAt) + 1;
  document.getElementById("viewer-img").src = imageURL(state.run.run.id, output.path);
  document.getElementById("viewer-img").alt = `${job.name} #${output.index}`;
  document.getElementById("viewer-title").textContent = job.name + (job.outputs.length > 1 ? ` #${output.index}` : "");
  document.getElementById("viewer-pos").textContent = `${ordinal} of ${list.length}`;
  const line = document.getElementById("viewer-verdict");
  line.textContent = verdictText(output) || "not judged";
  line.className = "verdict-line " + (output.verdict && !output.previous ? output.verdict : "");
  const facts = [["model", `${job.model} (${job.alias})`], ["prompt", job.prompt],
    ["params", JSON.stringify(job.params)], ["axes", Object.entries(job.axes).map(([k, v]) => `${k}=${v}`).join(", ")],
    ["cost", money(job.cost_usd, job.credits) + (job.emulated ? " (emulated)" : "")],
    ["size", output.width ? `${output.width}×${output.height}` : "—"], ["key", job.key.slice(0, 16) + "…"]];
  document.getElementById("viewer-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));
  const note = document.getElementById("note");
  note.value = output.previous ? "" : (output.note || "");
}

function move(delta) {
  const list = viewable();
  const at = list.findIndex(([, i]) => i === state.viewerAt);
  const next = list[at + delta];
  if (next) { state.viewerAt = next[1]; renderViewer(); }
}

// Verdicts are sent one after another, in the order given: a note typed in bursts can
// never be overwritten by an older version of itself that arrived late.
function sendVerdict(change) {
  const item = state.items[state.viewerAt];
  if (!item || !item.output) return Promise.resolve();
  state.pending = (state.pending || 0) + 1;
  setStatus("saving…");
  state.chain = (state.chain || Promise.resolve()).then(() => postVerdict(item, change));
  return state.chain;
}

async function postVerdict(item, change) {
  const { job, output } = item;
  try {
    const response = await fetch("/api/verdict", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ run: state.run.run.id, key: job.key, index: output.index, ...change }) });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    Object.assign(output, { verdict: body.verdict, stars: body.stars, note: body.note, previous: body.previous });
    state.pending -= 1;
    if (!state.pending) setStatus(`saved to ${body.picks_file}`);
    if (state.items[state.viewerAt] === item) renderViewerVerdict(output);
    refreshCard(job, output);
  } catch (err) {
    state.pending -= 1;
    setStatus("not saved: " + (err.message || err), true);
  }
}

function renderViewerVerdict(output) {
  const line = document.getElementById("viewer-verdict");
  line.textContent = verdictText(output) || "not judged";
  line.className = "verdict-line " + (output.verdict && !output.previous ? output.verdict : "");
}

function refreshCard(job, output) {
  for (const el of document.querySelectorAll(`.card[data-key="${job.key}"][data-index="${output.index}"]`)) {
    el.classList.remove("pick", "reject");
    if (output.verdict && !output.previous) el.classList.add(output.verdict);
    const old = el.querySelector(".verdict");
    const badge = verdictBadge(output);
    if (old) old.replaceWith(badge); else el.append(badge);
  }
}

document.addEventListener("keydown", (e) => {
  if (document.getElementById("viewer").hidden) return;
  if (e.target && e.target.id === "note") {
    if (e.key === "Escape") e.target.blur();
    return;
  }
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  const k = e.key;
  if (k === "ArrowRight") move(1);
  else if (k === "ArrowLeft") move(-1);
  else if (k === "p") sendVerdict({ verdict: "pick" });
  else if (k === "x") sendVerdict({ verdict: "reject" });
  else if (k === "u") sendVerdict({ clear: true });
  else if (/^[1-5]$/.test(k)) sendVerdict({ stars: Number(k) });
  else if (k === "Escape") closeViewer();
  else return;
  e.preventDefault();
});

document.getElementById("note").addEventListener("input", () => {
  clearTimeout(state.noteTimer);
  const note = document.getElementById("note").value;
  state.noteTimer = setTimeout(() => sendVerdict({ note }), 400);
});
document.getElementById("note").addEventListener("blur", () => {
  clearTimeout(state.noteTimer);
  const item = state.items[state.viewerAt];
  const note = document.getElementById("note").value;
  if (item && item.output && (item.output.note || "") !== note) sendVerdict({ note });
});
document.getElementById("viewer-close").addEventListener("click", closeViewer);
window.addEventListener("hashchange", route);
route();
