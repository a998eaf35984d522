// The docstatus dashboard: every document's progress, live over the event stream.
//
// The list starts from GET status/queue and is then kept current by GET status/stream
// (server-sent events). EventSource reconnects by itself and resumes with Last-Event-ID;
// when the browser gives up on a stream, a new one is opened and the list reloaded.
// Every piece of server data is inserted with textContent: file names and error
// messages come from users. URLs are relative, so the page works under any prefix.
"use strict";

const API = {
  queue: "status/queue?limit=1000",
  stream: "status/stream",
  uploads: "uploads",
  requeue: (docId) => `status/${encodeURIComponent(docId)}/requeue`,
  cancel: (docId) => `status/${encodeURIComponent(docId)}/cancel`,
  workers: "workers",
};

const ACTIVE = new Set(["queued", "parsing", "embedding_visual", "embedding_text", "storing"]);

const STATUS_LABELS = {
  queued: "Queued",
  parsing: "Parsing",
  embedding_visual: "Embedding pages",
  embedding_text: "Embedding text",
  storing: "Storing",
  completed: "Completed",
  failed: "Failed",
};

const STAGE_LABELS = {
  queued: "Waiting for a worker",
  parsing: "Reading the file",
  visual_embeddings: "Embedding pages",
  text_embeddings: "Embedding text",
  storing: "Storing the output",
  completed: "Done",
  failed: "Stopped",
};

const TOKEN_KEY = "docstatus.token";
/** How long a finished upload stays in the list before it folds into the "n finished" line. */
const UPLOAD_FOLD_MS = 4000;
const ANNOUNCE_EVERY_MS = 1500;
const RECONNECT_MS = [1000, 2000, 5000, 10000];
const WORKERS_EVERY_MS = 5000;

const $ = (id) => document.getElementById(id);

// -- state ------------------------------------------------------------------------------

/** doc_id -> {data: status JSON, at: performance.now() when received, row: row parts} */
const docs = new Map();
const counts = { active: 0, completed: 0, failed: 0, total: 0 };
let filter = "all";
/** doc_id -> the upload items that follow that document's status (until they fold). */
const uploadsByDoc = new Map();
let foldedUploads = 0;
/** Events that arrive while the initial list is loading; applied after it. */
let pending = null;

// -- time -------------------------------------------------------------------------------

/** A sortable number for an ISO-8601 time, to the microsecond (Date keeps milliseconds). */
function timeKey(iso) {
  if (!iso) return 0;
  const fraction = /\.(\d+)/.exec(iso);
  const micros = fraction ? Number(fraction[1].padEnd(6, "0").slice(0, 6)) : 0;
  const seconds = Date.parse(iso.replace(/\.\d+/, ""));
  return Number.isNaN(seconds) ? 0 : seconds * 1000 + micros;
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

// -- announcements (throttled: one message at most every ANNOUNCE_EVERY_MS) -------------

const announcements = [];
let announceTimer = null;
const ANNOUNCE_AT_MOST = 4;

/** Queue ``message`` for the live region; ``urgent`` ones (failures, refusals) are read first. */
function announce(message, urgent = false) {
  announcements.push({ message, urgent });
  if (announceTimer === null) announceTimer = setTimeout(flushAnnouncements, ANNOUNCE_EVERY_MS);
}

function flushAnnouncements() {
  announceTimer = null;
  const batch = announcements.splice(0);
  const ordered = [...batch.filter((a) => a.urgent), ...batch.filter((a) => !a.urgent)];
  const shown = ordered.slice(0, ANNOUNCE_AT_MOST).map((a) => a.message);
  if (batch.length > shown.length) shown.push(`and ${batch.length - shown.length} more changes`);
  $("announcer").textContent = shown.join(". ");
}

// -- rows -------------------------------------------------------------------------------

function createRow() {
  const tr = $("row-template").content.firstElementChild.cloneNode(true);
  const q = (selector) => tr.querySelector(selector);
  const row = {
    tr,
    filename: q(".filename"),
    docId: q(".doc-id"),
    attempt: q(".attempt"),
    error: q(".error-text"),
    badge: q(".badge"),
    progress: q(".cell-progress .progress"),
    fill: q(".cell-progress .progress-fill"),
    percent: q(".percent"),
    stage: q(".cell-stage"),
    pages: q(".cell-pages"),
    elapsed: q(".cell-elapsed .run"),
    waited: q(".cell-elapsed .waited"),
    eta: q(".cell-eta"),
    retry: q(".retry"),
    cancel: q(".cancel"),
  };
  row.retry.addEventListener("click", () => requeue(tr.dataset.docId, row));
  row.cancel.addEventListener("click", () => cancelDoc(tr.dataset.docId, row));
  return row;
}

function percentOf(data) {
  if (data.status === "completed") return 100;
  // Floor, so that an unfinished document never shows 100%.
  return Math.max(0, Math.min(100, Math.floor((data.progress || 0) * 100)));
}

function stageText(data) {
  let text = STAGE_LABELS[data.stage] || data.stage || "";
  const meta = data.metadata || {};
  if (data.status === "embedding_text" && Number.isInteger(meta.total_chunks) && meta.total_chunks > 0) {
    text += ` · chunk ${meta.chunk ?? 0} of ${meta.total_chunks}`;
  }
  return text;
}

function pagesText(data) {
  if (!data.total_pages) return "—";
  return data.page ? `${data.page} of ${data.total_pages}` : `— of ${data.total_pages}`;
}

function setProgress(bar, fill, percent, label) {
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-valuetext", label);
  fill.style.width = `${percent}%`;
}

function renderRow(row, data) {
  const { tr } = row;
  tr.dataset.docId = data.doc_id;
  tr.dataset.status = data.status;
  tr.dataset.paged = String(Boolean(data.total_pages));
  row.filename.textContent = data.filename;
  row.filename.title = data.filename;
  row.docId.textContent = data.doc_id.slice(0, 12);
  row.docId.title = data.doc_id;
  const attempt = (data.metadata || {}).attempt;
  row.attempt.hidden = !(attempt > 1);
  row.attempt.textContent = attempt > 1 ? `attempt ${attempt}` : "";
  row.error.hidden = !data.error;
  row.error.textContent = data.error || "";
  row.badge.textContent = STATUS_LABELS[data.status] || data.status;
  row.badge.className = `badge badge-${data.status}`;
  const percent = percentOf(data);
  row.percent.textContent = `${percent}%`;
  row.progress.setAttribute("aria-label", `Progress of ${data.filename}`);
  setProgress(row.progress, row.fill, percent, `${percent}%, ${row.badge.textContent}`);
  row.stage.textContent = stageText(data);
  row.pages.textContent = pagesText(data);
  // A failure for good (a damaged, encrypted or unsupported file) would only fail again.
  row.retry.hidden = data.status !== "failed" || (data.metadata || {}).retryable === false;
  row.retry.disabled = false;
  row.retry.setAttribute("aria-label", `Retry ${data.filename}`);
  row.cancel.hidden = !ACTIVE.has(data.status);
  row.cancel.disabled = false;
  row.cancel.setAttribute("aria-label", `Cancel ${data.filename}`);
  tr.hidden = !matchesFilter(data.status);
  renderTimes(docs.get(data.doc_id));
}

/** The time spent processing (the queue wait apart), and the wait's line under it, or "" for none. */
function runAndWait(data, since) {
  const queued = data.status === "queued";
  const wait = data.wait_time ?? null;
  if (wait === null) {
    // A status without the split (an older server): all of its elapsed time, as before.
    return [data.elapsed_time === null ? null : data.elapsed_time + since, ""];
  }
  const run = data.run_time === null || data.run_time === undefined ? null : data.run_time + since;
  const waited = queued ? wait + since : wait;
  return [run, queued ? `waiting ${formatDuration(waited)}` : `waited ${formatDuration(waited)}`];
}

/** Elapsed and ETA: the server's values, advanced locally between events for active documents. */
function renderTimes(doc) {
  const { data, at, row } = doc;
  const active = ACTIVE.has(data.status);
  const since = active ? (performance.now() - at) / 1000 : 0;
  const [run, waitText] = runAndWait(data, since);
  const eta = active && data.estimated_remaining !== null ? Math.max(0, data.estimated_remaining - since) : null;
  const elapsedText = formatDuration(run);
  const etaText = formatDuration(eta);
  if (row.elapsed.textContent !== elapsedText) row.elapsed.textContent = elapsedText;
  if (row.waited.textContent !== waitText) row.waited.textContent = waitText;
  row.waited.hidden = waitText === "";
  if (row.eta.textContent !== etaText) row.eta.textContent = etaText;
}

/** Newest first: by the start of the current attempt, then by id for a stable order. */
function isNewer(a, b) {
  const ka = timeKey(a.started_at);
  const kb = timeKey(b.started_at);
  return ka !== kb ? ka > kb : a.doc_id > b.doc_id;
}

function placeRow(doc) {
  const body = $("rows");
  for (const other of body.children) {
    const known = docs.get(other.dataset.docId);
    if (known && known !== doc && isNewer(doc.data, known.data)) {
      if (other !== doc.row.tr) body.insertBefore(doc.row.tr, other);
      return;
    }
  }
  body.appendChild(doc.row.tr);
}

// -- applying changes -------------------------------------------------------------------

function countStatus(status, delta) {
  counts.total += delta;
  if (ACTIVE.has(status)) counts.active += delta;
  else if (status in counts) counts[status] += delta;
}

function applyStatus(data, { quiet = false } = {}) {
  const known = docs.get(data.doc_id);
  // A replayed or buffered event older than what is shown changes nothing.
  if (known && timeKey(data.updated_at) < timeKey(known.data.updated_at)) return;
  const doc = known || { data, at: 0, row: createRow() };
  const before = known ? known.data : null;
  if (before) countStatus(before.status, -1);
  countStatus(data.status, +1);
  doc.data = data;
  doc.at = performance.now();
  docs.set(data.doc_id, doc);
  renderRow(doc.row, data);
  for (const item of uploadsByDoc.get(data.doc_id) || []) followUpload(item, data);
  if (!before || before.started_at !== data.started_at) placeRow(doc);
  if (!quiet && before && before.status !== data.status) announceStatus(data);
  refreshSummary();
}

/** Announce where documents end (every step of every document would drown the reader). */
function announceStatus(data) {
  if (data.status === "completed") announce(`${data.filename} completed`);
  else if (data.status === "failed") announce(`${data.filename} failed: ${data.error}`, true);
  else if (data.status === "queued") announce(`${data.filename} queued`);
}

function removeDoc(docId) {
  const doc = docs.get(docId);
  if (!doc) return;
  countStatus(doc.data.status, -1);
  doc.row.tr.remove();
  docs.delete(docId);
  refreshSummary();
}

function refreshSummary() {
  for (const key of Object.keys(counts)) $(`count-${key}`).textContent = String(counts[key]);
  const visible = [...docs.values()].some((doc) => !doc.row.tr.hidden);
  const empty = $("empty");
  empty.hidden = visible;
  empty.textContent = docs.size === 0 ? "No documents yet. Upload one above." : "No documents match this filter.";
}

function onChange(apply) {
  if (pending) pending.push(apply);
  else apply();
}

// -- filter -----------------------------------------------------------------------------

function matchesFilter(status) {
  if (filter === "all") return true;
  if (filter === "active") return ACTIVE.has(status);
  return status === filter;
}

function setFilter(value) {
  filter = value;
  $("filter").value = value;
  for (const button of document.querySelectorAll(".count")) {
    button.setAttribute("aria-pressed", String(button.dataset.filter === value));
  }
  for (const doc of docs.values()) doc.row.tr.hidden = !matchesFilter(doc.data.status);
  refreshSummary();
}

// -- the list and the stream ------------------------------------------------------------

async function loadList() {
  const response = await fetch(API.queue, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`GET ${API.queue}: ${response.status}`);
  const body = await response.json();
  const listed = new Set(body.queue.map((d) => d.doc_id));
  for (const docId of [...docs.keys()]) if (!listed.has(docId)) removeDoc(docId);
  for (const data of body.queue) applyStatus(data, { quiet: true });
  const note = $("truncated");
  note.hidden = body.total <= body.queue.length;
  note.textContent = `Showing the ${body.queue.length} most recent of ${body.total} documents.`;
}

async function loadListThenEvents() {
  pending = [];
  for (let attempt = 0; ; attempt += 1) {
    try {
      await loadList();
      break;
    } catch (error) {
      setConnection("offline", "Could not load the documents, retrying…");
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS[Math.min(attempt, RECONNECT_MS.length - 1)]));
    }
  }
  const buffered = pending;
  pending = null;
  for (const apply of buffered) apply();
  setConnection("live");
}

let failures = 0;

function connect() {
  const source = new EventSource(API.stream);
  let listed = false;
  source.addEventListener("open", () => {
    failures = 0;
    setConnection("live");
    // A new EventSource starts from now: load the list once; its own reconnects resume.
    if (!listed) {
      listed = true;
      loadListThenEvents();
    }
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      const wait = RECONNECT_MS[Math.min(failures, RECONNECT_MS.length - 1)];
      failures += 1;
      setConnection("offline", `Disconnected, retrying in ${Math.round(wait / 1000)}s`);
      setTimeout(connect, wait);
    } else {
      setConnection("reconnecting");
    }
  });
  source.addEventListener("status", (event) => {
    const data = JSON.parse(event.data);
    onChange(() => applyStatus(data));
  });
  source.addEventListener("removed", (event) => {
    const { doc_id: docId } = JSON.parse(event.data);
    onChange(() => removeDoc(docId));
  });
  // Changes were missed (the store was reset, or they left the server's log): the listing,
  // read again, is the truth; events after the reset apply on top of it.
  source.addEventListener("reset", () => {
    if (pending === null) loadListThenEvents();
  });
}

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Connection lost, reconnecting…",
  offline: "Disconnected",
};

function setConnection(state, text) {
  const box = $("connection");
  const message = text || CONNECTION_TEXT[state];
  if (box.dataset.state === state && $("connection-text").textContent === message) return;
  box.dataset.state = state;
  $("connection-text").textContent = message;
}

// -- token ------------------------------------------------------------------------------

function token() {
  return $("token").value.trim();
}

function authHeaders() {
  return token() ? { Authorization: `Bearer ${token()}` } : {};
}

function askForToken() {
  $("token-box").open = true;
}

function setUpToken() {
  const input = $("token");
  let stored = "";
  try {
    stored = sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    // Storage can be disabled; the field still works for this page.
  }
  input.value = stored;
  if (stored) $("token-box").open = true;
  input.addEventListener("input", () => {
    try {
      if (token()) sessionStorage.setItem(TOKEN_KEY, token());
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // As above.
    }
  });
}

// -- errors from the API ----------------------------------------------------------------

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function errorMessage(status, body) {
  if (status === 0) return "The server could not be reached";
  if (status === 401) return "The server needs an API token: enter it under “API token”";
  if (body && typeof body.error === "string") return body.error;
  return `The server answered ${status}`;
}

// -- uploads ----------------------------------------------------------------------------

function createUploadItem(name) {
  const li = $("upload-template").content.firstElementChild.cloneNode(true);
  const item = {
    li,
    bar: li.querySelector(".progress"),
    fill: li.querySelector(".progress-fill"),
    state: li.querySelector(".upload-state"),
    docId: null,
    duplicate: "",
    foldTimer: null,
  };
  li.querySelector(".upload-name").textContent = name;
  li.querySelector(".upload-name").title = name;
  item.bar.setAttribute("aria-label", `Upload of ${name}`);
  li.querySelector(".dismiss").setAttribute("aria-label", `Dismiss ${name}`);
  li.querySelector(".dismiss").addEventListener("click", () => {
    if (item.docId) forgetUpload(item);
    li.remove();
    refreshUploads();
  });
  $("uploads").prepend(li);
  refreshUploads();
  return item;
}

function setUploadState(item, state, text) {
  item.li.dataset.state = state;
  item.state.textContent = text;
}

function refreshUploads() {
  const folded = $("uploads-folded");
  folded.hidden = foldedUploads === 0;
  folded.textContent = `${foldedUploads} finished ${foldedUploads === 1 ? "upload" : "uploads"}, shown in Documents below`;
  $("uploads-box").hidden = $("uploads").children.length === 0 && foldedUploads === 0;
}

/** An accepted upload shows its document's live status; once finished, it folds away. */
function followUpload(item, data) {
  const percent = percentOf(data);
  const label = STATUS_LABELS[data.status] || data.status;
  let text = label;
  if (data.status === "failed") text = `${label}: ${data.error || ""}`;
  else if (ACTIVE.has(data.status) && data.status !== "queued") text = `${label} · ${percent}%`;
  if (item.duplicate && data.status === "queued") text = item.duplicate;
  item.li.dataset.status = data.status;
  item.state.textContent = text;
  if (!ACTIVE.has(data.status) && item.foldTimer === null) {
    item.foldTimer = setTimeout(() => foldUpload(item), UPLOAD_FOLD_MS);
  } else if (ACTIVE.has(data.status) && item.foldTimer !== null) {
    clearTimeout(item.foldTimer); // retried before it folded: follow the new attempt
    item.foldTimer = null;
  }
}

function forgetUpload(item) {
  if (item.foldTimer !== null) clearTimeout(item.foldTimer);
  const followers = uploadsByDoc.get(item.docId) || [];
  const left = followers.filter((other) => other !== item);
  if (left.length) uploadsByDoc.set(item.docId, left);
  else uploadsByDoc.delete(item.docId);
}

function foldUpload(item) {
  item.foldTimer = null;
  if (!item.li.isConnected) return;
  forgetUpload(item);
  item.li.remove();
  foldedUploads += 1;
  refreshUploads();
}

function uploaded(item, name, status, body) {
  if (status === 200 && body && body.status === "accepted") {
    setProgress(item.bar, item.fill, 100, "Uploaded");
    const text = body.duplicate ? "Already known" + (body.requeued ? ", queued again" : "") : "Queued";
    setUploadState(item, "accepted", text);
    item.li.dataset.docId = body.doc_id;
    item.docId = body.doc_id;
    item.duplicate = body.duplicate ? text : "";
    uploadsByDoc.set(body.doc_id, [...(uploadsByDoc.get(body.doc_id) || []), item]);
    // The stream may have told of the document before the upload's own answer arrived.
    const known = docs.get(body.doc_id);
    if (known) followUpload(item, known.data);
    announce(`${name} uploaded`);
    return;
  }
  const reason = errorMessage(status, body);
  setUploadState(item, "rejected", `Refused: ${reason}`);
  announce(`${name} refused: ${reason}`, true);
  if (status === 401) askForToken();
}

function uploadOne(file) {
  const item = createUploadItem(file.name);
  const request = new XMLHttpRequest();
  request.open("POST", API.uploads);
  for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
  request.setRequestHeader("Accept", "application/json");
  request.upload.addEventListener("progress", (event) => {
    if (!event.lengthComputable || event.total === 0) return;
    const percent = Math.floor((event.loaded / event.total) * 100);
    setProgress(item.bar, item.fill, percent, `${percent}% uploaded`);
    setUploadState(item, "uploading", `Uploading ${percent}%`);
  });
  request.addEventListener("load", () => {
    uploaded(item, file.name, request.status, parseJson(request.responseText));
  });
  request.addEventListener("error", () => uploaded(item, file.name, 0, null));
  const form = new FormData();
  form.append("file", file, file.name);
  setUploadState(item, "uploading", "Uploading 0%");
  request.send(form);
}

function uploadFiles(files) {
  // One request per file: each has its own progress bar and its own answer.
  for (const file of files) uploadOne(file);
}

function setUpUploads() {
  const input = $("file-input");
  const zone = $("dropzone");
  zone.addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    uploadFiles([...input.files]);
    input.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer) uploadFiles([...event.dataTransfer.files]);
  });
  // A file dropped beside the zone must not navigate away from the page.
  for (const name of ["dragover", "drop"]) window.addEventListener(name, (event) => event.preventDefault());
  $("clear-uploads").addEventListener("click", () => {
    for (const li of [...$("uploads").children]) if (li.dataset.state !== "uploading") li.remove();
    for (const [docId, items] of [...uploadsByDoc]) {
      const kept = items.filter((item) => item.li.isConnected);
      for (const item of items) if (!item.li.isConnected && item.foldTimer !== null) clearTimeout(item.foldTimer);
      if (kept.length) uploadsByDoc.set(docId, kept);
      else uploadsByDoc.delete(docId);
    }
    foldedUploads = 0;
    refreshUploads();
  });
}

// -- retry ------------------------------------------------------------------------------

async function requeue(docId, row) {
  row.retry.disabled = true;
  let status = 0;
  let body = null;
  try {
    const response = await fetch(API.requeue(docId), { method: "POST", headers: authHeaders() });
    status = response.status;
    body = parseJson(await response.text());
  } catch {
    // status 0: unreachable
  }
  if (status === 200) return; // the stream shows the new attempt
  row.retry.disabled = false;
  const reason = errorMessage(status, body);
  row.error.hidden = false;
  row.error.textContent = `Retry refused: ${reason}`;
  announce(`Retry refused: ${reason}`, true);
  if (status === 401) askForToken();
}

// -- cancel -----------------------------------------------------------------------------

async function cancelDoc(docId, row) {
  const name = row.filename.textContent;
  if (!window.confirm(`Cancel ${name}? Its processing stops and it is marked failed.`)) return;
  row.cancel.disabled = true;
  let status = 0;
  let body = null;
  try {
    const response = await fetch(API.cancel(docId), { method: "POST", headers: authHeaders() });
    status = response.status;
    body = parseJson(await response.text());
  } catch {
    // status 0: unreachable
  }
  if (status === 200) return; // the stream shows the document failed as cancelled
  row.cancel.disabled = false;
  const reason = errorMessage(status, body);
  row.error.hidden = false;
  row.error.textContent = `Cancel refused: ${reason}`;
  announce(`Cancel of ${name} refused: ${reason}`, true);
  if (status === 401) askForToken();
}

// -- workers ----------------------------------------------------------------------------

function workerRow(worker) {
  const tr = $("worker-template").content.firstElementChild.cloneNode(true);
  const held = worker.documents || [];
  const cells = {
    ".worker-id": worker.id,
    ".worker-host": worker.host ?? "—",
    ".worker-engine": worker.engine ?? "—",
    ".worker-processes": worker.processes ?? "—",
    ".worker-docs": String(held.length),
    ".worker-seen": `${formatDuration((Date.now() - Date.parse(worker.last_seen)) / 1000)} ago`,
  };
  for (const [selector, text] of Object.entries(cells)) tr.querySelector(selector).textContent = String(text);
  tr.querySelector(".worker-docs").title = held.join("\n");
  tr.dataset.workerId = worker.id;
  return tr;
}

function renderWorkers(workers) {
  $("worker-count").textContent = String(workers.length);
  $("worker-rows").replaceChildren(...workers.map(workerRow));
  $("workers-table").hidden = workers.length === 0;
  $("workers-empty").hidden = workers.length > 0;
}

async function loadWorkers() {
  try {
    const response = await fetch(API.workers, { headers: { Accept: "application/json" } });
    if (response.ok) renderWorkers((await response.json()).workers);
  } catch {
    // Unreachable: the connection indicator says so; the next poll tries again.
  }
}

function setUpWorkers() {
  loadWorkers();
  setInterval(loadWorkers, WORKERS_EVERY_MS);
}

// -- start ------------------------------------------------------------------------------

function tick() {
  for (const doc of docs.values()) if (ACTIVE.has(doc.data.status)) renderTimes(doc);
}

function start() {
  setUpToken();
  setUpUploads();
  $("filter").addEventListener("change", (event) => setFilter(event.target.value));
  for (const button of document.querySelectorAll(".count")) {
    button.addEventListener("click", () => setFilter(button.dataset.filter));
  }
  refreshSummary();
  connect();
  setUpWorkers();
  setInterval(tick, 1000);
}

start();
