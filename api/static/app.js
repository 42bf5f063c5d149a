// curator's web UI: plain JS, no build step, no third-party assets. Every call goes through api(),
// which adds the API key kept in sessionStorage (this tab only); images are fetched the same way and
// shown from blob URLs, so thumbnails need the same key as everything else.
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const state = { key: sessionStorage.getItem("curator-key") || "", timers: [] };
const COLOURS = ["#2457c5", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0c8599", "#c2255c", "#5c940d",
                 "#364fc7", "#a61e4d", "#087f5b", "#862e9c"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (state.key) headers.Authorization = "Bearer " + state.key;
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  if (!res.ok) {
    let detail = res.statusText;
    try { const body = await res.json(); detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (e) { /* not JSON */ }
    if (res.status === 401) detail = "this server needs an API key: enter one above (" + detail + ")";
    throw new Error(res.status + ": " + detail);
  }
  return opts.raw ? res : res.json();
}

function guarded(fn) {
  return async (event) => {
    if (event && event.preventDefault) event.preventDefault();
    showError("");
    try { await fn(event); } catch (err) { showError(err.message); }
  };
}

// Thumbnails are fetched when they come near the viewport: a set of thousands costs only what is seen.
const lazy = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    const img = entry.target;
    lazy.unobserve(img);
    api(img.dataset.src, { raw: true }).then((res) => res.blob()).then((blob) => { img.src = URL.createObjectURL(blob); })
      .catch(() => { img.alt = "(no preview)"; img.classList.add("missing"); });
  }
}, { rootMargin: "400px" });

function image(path, alt) {
  const img = el("img", { alt: alt || "", "data-src": path, width: "140", height: "140" });
  lazy.observe(img);
  return img;
}

function card(hit, extra = {}) {
  const node = el("div", { class: "card" + (extra.reason ? " dropped" : ""), "data-id": hit.id ?? hit.pool_id,
                           title: "search from this item", on: { click: () => searchItem(hit.id ?? hit.pool_id) } },
    image(`/items/${hit.id ?? hit.pool_id}/thumbnail?size=160`, hit.key || ""),
    el("div", { class: "score" }, extra.rankLabel || "", hit.score !== undefined ? hit.score.toFixed(3)
       : (hit.similarity !== null && hit.similarity !== undefined ? hit.similarity.toFixed(3) : "")),
    extra.reason ? el("span", { class: "badge" }, extra.reason) : "",
    el("div", { class: "caption", title: hit.caption || "" }, hit.caption || ""),
    el("div", { class: "key" }, hit.key ? hit.key : "#" + (hit.id ?? hit.pool_id)));
  return node;
}

// ---- tabs ---------------------------------------------------------------------------------------
function route() {
  const [tab, arg] = (location.hash.slice(1) || "search").split("/");
  for (const s of document.querySelectorAll("main section")) s.hidden = s.id !== "tab-" + tab;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === tab);
  state.timers.forEach(clearInterval);
  state.timers = [];
  showError("");
  const load = { curate: loadCurateForm, sets: () => loadSets(arg), jobs: loadJobs, distill: loadDistill }[tab];
  if (load) guarded(load)();
}

// ---- search -------------------------------------------------------------------------------------
const k = () => Number($("#search-k").value) || 24;

function showHits(title, hits) {
  $("#search-results").append(el("h3", {}, title), el("div", { class: "grid" }, hits.map((h) => card(h))));
}

const searchImages = guarded(async () => {
  $("#search-results").replaceChildren();
  for (const file of $("#search-files").files) {
    const body = new FormData();
    body.append("file", file);
    showHits(`Nearest to ${file.name}`, (await api(`/search?k=${k()}`, { method: "POST", body })).hits);
  }
});

const searchText = guarded(async () => {
  $("#search-results").replaceChildren();
  const text = $("#search-query").value;
  const out = await api(`/search?k=${k()}`, { method: "POST", headers: { "Content-Type": "application/json" },
                                              body: JSON.stringify({ text }) });
  showHits(`Nearest to “${text}”`, out.hits);
});

async function searchItem(id) {
  if (location.hash.slice(1) !== "search") location.hash = "search";
  $("#search-id").value = id;
  await guarded(async () => {
    $("#search-results").replaceChildren();
    const out = await api(`/search?item_id=${id}&k=${k()}`);
    $("#search-results").append(el("h3", {}, `Nearest to pool item #${id}`),
      el("div", { class: "grid" }, card({ id, key: "the query item" }), ...out.hits.map((h) => card(h))));
  })();
}

// ---- curate -------------------------------------------------------------------------------------
let curateSchema = null;

async function loadCurateForm() {
  if (curateSchema) return;
  const spec = await api("/openapi.json");
  curateSchema = spec.components.schemas.CurateParams;
  const box = $("#curate-params");
  for (const [name, prop] of Object.entries(curateSchema.properties)) {
    const types = (prop.anyOf || [prop]).map((p) => p.type).filter((t) => t && t !== "null");
    const enums = prop.enum || (prop.anyOf || []).flatMap((p) => p.enum || []);
    let input;
    if (enums.length) {
      input = el("select", { name }, enums.map((v) => el("option", v === prop.default ? { value: v, selected: "" } : { value: v }, v)));
    } else if (types[0] === "boolean") {
      input = el("input", Object.assign({ type: "checkbox", name }, prop.default ? { checked: "" } : {}));
    } else {
      const numeric = types[0] === "integer" || types[0] === "number";
      input = el("input", { name, type: numeric ? "number" : "text", step: types[0] === "number" ? "any" : "1",
                            placeholder: prop.default === null || prop.default === undefined ? "(unset)" : String(prop.default) });
    }
    input.dataset.kind = types[0] || "string";
    box.append(el("label", {}, name, el("span", {}, prop.description || ""), input));
  }
}

function curateParams() {
  const params = {};
  for (const input of $("#curate-params").querySelectorAll("[name]")) {
    const kind = input.dataset.kind;
    if (kind === "boolean") { params[input.name] = input.checked; continue; }
    if (input.value === "") continue;
    params[input.name] = kind === "integer" ? parseInt(input.value, 10) : kind === "number" ? Number(input.value) : input.value;
  }
  return params;
}

const startCuration = guarded(async () => {
  const body = new FormData();
  const files = [...$("#curate-files").files];
  files.forEach((f) => body.append("files", f));
  body.append("params", JSON.stringify(curateParams()));
  const labels = $("#curate-labels").value.trim();
  if (labels) body.append("labels", JSON.stringify(labels.split(",").map((s) => s.trim())));
  const job = await api("/curate", { method: "POST", body });
  watchJob(job.id);
});

function watchJob(id) {
  const status = $("#curate-status");
  const bar = el("progress", { max: "1", value: "0" });
  const line = el("span", { class: "job-state" }, "queued");
  status.replaceChildren(el("p", {}, `Job ${id}: `, line, " ", bar));
  const timer = setInterval(guarded(async () => {
    const job = await api(`/jobs/${id}`);
    bar.value = job.progress;
    line.textContent = job.state + (job.phase ? ` (${job.phase})` : "");
    if (["succeeded", "failed", "cancelled"].includes(job.state)) {
      clearInterval(timer);
      if (job.error) status.append(el("p", { class: "badge" }, job.error));
      if (job.transfer_set_id) {
        status.append(el("p", {}, el("a", { href: `#sets/${job.transfer_set_id}`, class: "open-set" },
                                      `Open transfer set ${job.transfer_set_id}`),
                         ` — ${job.counts ? job.counts.emitted : 0} images`));
      }
    }
  }), 500);
  state.timers.push(timer);
}

// ---- transfer sets ------------------------------------------------------------------------------
async function loadSets(openId) {
  const sets = await api("/transfer-sets?limit=200");
  $("#sets-list").replaceChildren(sets.length ? el("table", {},
    el("tr", {}, el("th", {}, "set"), el("th", {}, "images"), el("th", {}, "created")),
    sets.map((s) => el("tr", { class: "clickable", on: { click: () => { location.hash = `sets/${s.id}`; } } },
      el("td", {}, s.id), el("td", {}, s.counts ? s.counts.emitted : ""), el("td", {}, s.created_at))))
    : el("p", { class: "hint" }, "No transfer sets yet: start one under Curate."));
  $("#set-view").replaceChildren();
  if (openId) await showSet(openId);
}

async function download(setId, name) {
  const blob = await (await api(`/transfer-sets/${setId}/shards/${name}`, { raw: true })).blob();
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

async function showSet(id) {
  const view = await api(`/transfer-sets/${id}/view`);
  const box = $("#set-view");
  const c = view.counts;
  box.replaceChildren(
    el("h3", {}, `Transfer set ${view.id}`),
    el("p", {}, `${c.emitted} images from ${c.queries} queries over index ${view.index_name}; `,
       `${c.deduped} near-duplicates and ${c.excluded} contaminated candidates left out.`),
    el("p", {}, "Parameters: ", el("code", {}, JSON.stringify(view.params))),
    el("p", { class: "downloads" }, "Shards: ", view.shards.map((name) =>
      el("a", { href: `/transfer-sets/${id}/shards/${name}`, class: "shard-link",
                on: { click: guarded((e) => download(id, name)) } }, name + " "))));
  const rows = el("div", { id: "set-queries" });
  box.append(el("h3", {}, "Embedding map"), await mapCanvas(id, view), rows);
  for (const q of view.queries) {
    const qimg = q.thumbnail ? image(`/transfer-sets/${id}/queries/${q.index}/thumbnail`, q.id) : el("div", { class: "hint" }, "(no image)");
    rows.append(el("div", { class: "query-row" },
      el("div", { class: "query" }, qimg, el("div", {}, el("b", {}, q.id)), q.label ? el("div", {}, "label: " + q.label) : "",
         el("div", { class: "hint" }, `${q.taken} of ${q.quota} taken`)),
      el("div", {},
        el("div", { class: "grid taken" }, q.items.map((it) => card(it, { rankLabel: `#${it.rank} ` }))),
        q.dropped.length ? el("div", {}, el("h4", {}, "Left out"),
          el("div", { class: "grid dropped" }, q.dropped.map((it) => card(it, { reason: it.reason, rankLabel: `#${it.rank} ` })))) : "")));
  }
  if (view.unattributed.length) {
    box.append(el("h4", {}, "Left out of the random draw"),
      el("div", { class: "grid dropped" }, view.unattributed.map((it) => card(it, { reason: it.reason }))));
  }
}

async function mapCanvas(id, view) {
  const map = await api(`/transfer-sets/${id}/map`);
  const size = 420, pad = 14;
  const canvas = el("canvas", { width: size, height: size, id: "map" });
  const by = el("select", {}, el("option", { value: "query" }, "colour by query"), el("option", { value: "label" }, "colour by label"));
  const legend = el("div", { class: "legend" });
  const draw = () => {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, size, size);
    const keys = [...new Set(map.points.map((p) => (by.value === "label" ? p.label || "(none)" : p.query)))];
    const colour = (p) => COLOURS[keys.indexOf(by.value === "label" ? p.label || "(none)" : p.query) % COLOURS.length];
    const xy = (v) => pad + (v + 1) / 2 * (size - 2 * pad);
    for (const p of [...map.points].sort((a, b) => (a.kind === "query") - (b.kind === "query"))) {
      ctx.fillStyle = colour(p);
      ctx.beginPath();
      if (p.kind === "query") { ctx.strokeStyle = "#000"; ctx.rect(xy(p.x) - 5, xy(-p.y) - 5, 10, 10); ctx.fill(); ctx.stroke(); }
      else { ctx.arc(xy(p.x), xy(-p.y), 3, 0, 2 * Math.PI); ctx.fill(); }
    }
    legend.replaceChildren(...keys.slice(0, 24).map((key) => el("span", {}, el("i", { style: `background:${COLOURS[keys.indexOf(key) % COLOURS.length]}` }),
      by.value === "label" ? key : (view.queries[key] ? view.queries[key].id : key))));
  };
  by.addEventListener("change", draw);
  setTimeout(draw);
  return el("div", {}, by, el("div", { class: "hint" }, "squares: queries; dots: their transfer set (first two principal components)"), canvas, legend);
}

// ---- jobs ---------------------------------------------------------------------------------------
async function loadJobs() {
  const render = async () => {
    const jobs = await api("/jobs?limit=200");
    $("#jobs-list").replaceChildren(el("table", {},
      el("tr", {}, ["job", "state", "phase", "progress", "set", "error"].map((h) => el("th", {}, h))),
      jobs.map((j) => el("tr", {}, el("td", {}, j.id), el("td", { class: "state" }, j.state), el("td", {}, j.phase || ""),
        el("td", {}, el("progress", { max: "1", value: String(j.progress) })),
        el("td", {}, j.transfer_set_id ? el("a", { href: `#sets/${j.transfer_set_id}` }, j.transfer_set_id) : ""),
        el("td", {}, j.error || "")))));
  };
  await render();
  state.timers.push(setInterval(guarded(render), 2000));
}

function accuracy(split) {
  if (!split) return "";
  return Object.entries(split).filter(([, s]) => s).map(([name, s]) => `${name} ${(100 * s.accuracy).toFixed(1)}%`).join(", ");
}

async function loadDistill() {
  const jobs = await api("/distill-jobs?limit=200");
  $("#distill-list").replaceChildren(jobs.length ? el("table", {},
    el("tr", {}, ["job", "state", "set", "worker", "teacher", "after distillation", "final", "error"].map((h) => el("th", {}, h))),
    jobs.map((j) => {
      const r = j.report || {};
      const student = r.student || {};
      return el("tr", {}, el("td", {}, j.id), el("td", {}, j.state), el("td", {}, j.transfer_set_id), el("td", {}, j.worker || ""),
        el("td", {}, r.teacher ? accuracy({ val: r.teacher.val, test: r.teacher.test }) : ""), el("td", {}, accuracy(student.after_b)),
        el("td", {}, accuracy(student.final)), el("td", {}, j.error || ""));
    })) : el("p", { class: "hint" }, "No distill jobs."));
}

// ---- start --------------------------------------------------------------------------------------
$("#key").value = state.key;
$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.key = $("#key").value.trim();
  sessionStorage.setItem("curator-key", state.key);
  curateSchema = null;
  $("#curate-params").replaceChildren(el("legend", {}, "Parameters"));
  route();
});
$("#search-image").addEventListener("submit", searchImages);
$("#search-text").addEventListener("submit", searchText);
$("#search-item").addEventListener("submit", (e) => { e.preventDefault(); searchItem(Number($("#search-id").value)); });
$("#curate-form").addEventListener("submit", startCuration);
window.addEventListener("hashchange", route);
route();
