// The docstatus dashboard: every document's progress, live over the event stream.
//
// The list loads one page at a time (GET status with a cursor, filtered and searched on
// the server) and is then kept current by GET status/stream (server-sent events); the
// counts come from GET status/health, so neither ever reads every document. EventSource
// reconnects by itself and resumes with Last-Event-ID; when the browser gives up on a
// stream, a new one is opened and the list reloaded. A document has a page of its own
// (#/doc/<id>): its timeline, error, metadata and output. Charts of the last hour come
// from GET stats/throughput, drawn as SVG here.
// Every piece of server data is inserted with textContent: file names and error
// messages come from users. URLs are relative, so the page works under any prefix.
"use strict";

const API = {
  listing: "status",
  queue: "status/queue?limit=1000",
  counts: "status/health",
  stream: "status/stream",
  status: (docId) => `status/${encodeURIComponent(docId)}`,
  timeline: (docId) => `status/${encodeURIComponent(docId)}/timeline`,
  document: (docId) => `documents/${encodeURIComponent(docId)}`,
  throughput: "stats/throughput?minutes=60",
  bulkRetry: "status/retry",
  bulkDelete: "status/delete",
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
/** Documents per page of the list; more load as the list is scrolled to its end. */
const PAGE_SIZE = 100;
/** Counts are read again at most this often while changes arrive. */
const COUNTS_EVERY_MS = 1000;
const CHARTS_EVERY_MS = 30000;
/** A bulk action's confirmation counts the documents it affects up to this many pages. */
const COUNT_PAGES = 10;
const COUNT_PAGE_SIZE = 1000;
/** Page thumbnails shown on a document's page. */
const THUMBNAILS = 12;

const $ = (id) => document.getElementById(id);

// -- state ------------------------------------------------------------------------------

/** doc_id -> {data: status JSON, at: performance.now() when received, row: row parts} */
const docs = new Map();
const counts = { active: 0, completed: 0, failed: 0, total: 0, byStatus: {} };
let filter = "all";
/** The search text: documents whose file name contains it or whose id starts with it. */
let search = "";
/** The list's paging: the cursor of the next page, whether it is being read, and which load
 * is current (a newer filter supersedes a page still on its way). ``legacy``: the server has
 * no filtered listing (null until known), so its 1,000 most recent are filtered here. */
const paging = { next: null, done: true, loading: false, generation: 0, legacy: null };
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

function docHref(docId) {
  return `#/doc/${encodeURIComponent(docId)}`;
}

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
  row.filename.href = docHref(data.doc_id);
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
  tr.hidden = !matches(data);
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
  // Pages arrive newest first: most rows go at the end, found without a walk.
  const last = body.lastElementChild;
  const lastDoc = last && docs.get(last.dataset.docId);
  if (!last || (lastDoc && lastDoc !== doc && isNewer(lastDoc.data, doc.data))) {
    body.appendChild(doc.row.tr);
    return;
  }
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

/** Whether a document the list has not loaded belongs in it: it matches, and it sorts
 * among the loaded rows (one further down waits for its page). Without a filtered listing
 * every document is kept, shown or hidden by the filter here. */
function adopts(data) {
  if (paging.legacy !== false) return true;
  if (!matches(data)) return false;
  if (paging.done) return true;
  const last = $("rows").lastElementChild;
  const oldest = last && docs.get(last.dataset.docId);
  return !oldest || isNewer(data, oldest.data);
}

function applyStatus(data, { quiet = false, listed = false } = {}) {
  const known = docs.get(data.doc_id);
  // A replayed or buffered event older than what is shown changes nothing.
  if (known && timeKey(data.updated_at) < timeKey(known.data.updated_at)) return;
  if (!known || known.data.status !== data.status) scheduleCounts();
  if (!known && !listed && !adopts(data)) return;
  const doc = known || { data, at: 0, row: createRow() };
  const before = known ? known.data : null;
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
  doc.row.tr.remove();
  docs.delete(docId);
  refreshSummary();
}

function refreshSummary() {
  for (const key of ["active", "completed", "failed", "total"]) $(`count-${key}`).textContent = String(counts[key]);
  let visible = 0;
  for (const doc of docs.values()) if (!doc.row.tr.hidden) visible += 1;
  const empty = $("empty");
  empty.hidden = visible > 0 || !paging.done;
  const none = docs.size === 0 && counts.total === 0 && !search && filter === "all";
  empty.textContent = none ? "No documents yet. Upload one above." : "No documents match this filter.";
  const note = $("truncated");
  const expected = search ? null : countOf(filter);
  if (paging.legacy) {
    note.hidden = counts.total <= docs.size;
    note.textContent = `Showing the ${docs.size} most recent of ${counts.total} documents.`;
  } else {
    note.hidden = paging.done;
    note.textContent =
      expected === null ? `Showing the ${visible} most recent.` : `Showing the ${visible} most recent of ${expected}.`;
  }
}

/** How many documents the server counts for ``which`` (a filter value). */
function countOf(which) {
  if (which === "all") return counts.total;
  if (which in counts) return counts[which];
  return counts.byStatus[which] ?? 0;
}

// -- counts (from the server: the list holds only the pages loaded) -----------------------

let countsTimer = null;

function scheduleCounts() {
  if (countsTimer === null) countsTimer = setTimeout(loadCounts, COUNTS_EVERY_MS);
}

async function loadCounts() {
  if (countsTimer !== null) clearTimeout(countsTimer);
  countsTimer = null;
  try {
    const { status, body } = await fetchJson(API.counts);
    if (status === 200 && body && body.counts) setCounts(body.counts);
  } catch {
    // Unreachable: the connection indicator says so; the next change asks again.
  }
}

function setCounts(byStatus) {
  for (const key of ["active", "completed", "failed", "total"]) counts[key] = byStatus[key] ?? 0;
  counts.byStatus = byStatus;
  refreshSummary();
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

/** The server's rule for q: the file name contains it (ignoring case) or the id starts with it. */
function matchesSearch(data) {
  if (!search) return true;
  return data.doc_id.startsWith(search) || data.filename.toLowerCase().includes(search.toLowerCase());
}

function matches(data) {
  return matchesFilter(data.status) && matchesSearch(data);
}

/** The statuses a filter value asks the server for (none: every status). */
function filterStatuses() {
  if (filter === "all") return [];
  if (filter === "active") return [...ACTIVE];
  return [filter];
}

function setFilter(value) {
  filter = value;
  $("filter").value = value;
  for (const button of document.querySelectorAll(".count")) {
    button.setAttribute("aria-pressed", String(button.dataset.filter === value));
  }
  relist();
}

/** The filter or the search changed: hide what no longer matches now, then ask the server. */
function relist() {
  for (const doc of docs.values()) doc.row.tr.hidden = !matches(doc.data);
  refreshSummary();
  if (paging.legacy === false) loadListThenEvents();
}

let searchTimer = null;

/** Take what the search box says now (typing waits 250 ms first; an action does not). */
function applySearch() {
  clearTimeout(searchTimer);
  const text = $("search").value.trim();
  if (text === search) return;
  search = text;
  relist();
}

function setUpSearch() {
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(applySearch, 250);
  });
}

// -- the list and the stream ------------------------------------------------------------

async function fetchJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  return { status: response.status, body: parseJson(await response.text()) };
}

/** A page of GET status: newest first by the attempt's start (as the rows are placed), or with
 * ``sort: "updated"`` by the last change, which ``until`` then bounds (a finished document's
 * last change is when it finished). */
function listingUrl(cursor, { statuses = filterStatuses(), until = null, limit = PAGE_SIZE, sort = "started" } = {}) {
  const params = new URLSearchParams({ limit: String(limit), sort, order: "desc" });
  for (const status of statuses) params.append("status", status);
  if (search) params.set("q", search);
  if (until) params.set("until", until);
  if (cursor) params.set("cursor", cursor);
  return `${API.listing}?${params}`;
}

/** One page of the list, ``{documents, next}``. A server without the filtered listing refuses
 * its parameters (400): from then on it is read as before, its 1,000 most recent at once. */
async function fetchPage(cursor) {
  if (paging.legacy !== true) {
    const { status, body } = await fetchJson(listingUrl(cursor));
    if (status === 200 && body && Array.isArray(body.documents)) {
      paging.legacy = false;
      return { documents: body.documents, next: body.next ?? null };
    }
    if (status !== 400 || paging.legacy !== null) throw new Error(`GET ${API.listing}: ${status}`);
    paging.legacy = true;
  }
  const { status, body } = await fetchJson(API.queue);
  if (status !== 200 || !body) throw new Error(`GET ${API.queue}: ${status}`);
  return { documents: body.queue, next: null };
}

function setPaging(next) {
  paging.next = next;
  paging.done = next === null;
  $("load-more").hidden = paging.done;
  refreshSummary();
}

/** The first page again (a new filter, a reconnect, a reset): rows not on it go. */
async function loadList() {
  const generation = ++paging.generation;
  paging.loading = true;
  try {
    const page = await fetchPage(null);
    if (generation !== paging.generation) return;
    const listed = new Set(page.documents.map((d) => d.doc_id));
    for (const docId of [...docs.keys()]) if (!listed.has(docId)) removeDoc(docId);
    for (const data of page.documents) applyStatus(data, { quiet: true, listed: true });
    setPaging(page.next);
  } finally {
    if (generation === paging.generation) paging.loading = false;
  }
  await loadCounts();
}

/** The next page, at the end of the list (the "Show more" button, or scrolling to it). */
async function loadMore() {
  if (paging.loading || paging.done || pending !== null) return;
  const generation = paging.generation;
  paging.loading = true;
  try {
    const page = await fetchPage(paging.next);
    if (generation !== paging.generation) return;
    for (const data of page.documents) applyStatus(data, { quiet: true, listed: true });
    setPaging(page.next);
  } catch {
    // The button stays: the next scroll or click tries again.
  } finally {
    if (generation === paging.generation) paging.loading = false;
  }
  if (generation === paging.generation && !paging.done && nearTheEnd()) loadMore();
}

function nearTheEnd() {
  const button = $("load-more");
  return !button.hidden && button.getBoundingClientRect().top < window.innerHeight + 400;
}

function setUpPaging() {
  $("load-more").addEventListener("click", loadMore);
  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((entry) => entry.isIntersecting)) loadMore();
    },
    { rootMargin: "400px" },
  );
  observer.observe($("load-more"));
}

/** Whether the list was asked for again while a load was under way (a new filter or search). */
let reloadDue = false;

async function loadListThenEvents() {
  // One load at a time: a second stream opening meanwhile (a reconnect) has its events
  // buffered by the load under way, which applies them once the list is in. A load asked
  // for meanwhile runs next: the list ends as the filter and search say now.
  if (pending !== null) {
    reloadDue = true;
    return;
  }
  pending = [];
  do {
    reloadDue = false;
    for (let attempt = 0; ; attempt += 1) {
      try {
        await loadList();
        break;
      } catch (error) {
        setConnection("offline", "Could not load the documents, retrying…");
        await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS[Math.min(attempt, RECONNECT_MS.length - 1)]));
      }
    }
  } while (reloadDue);
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
    if (docView.id === data.doc_id) followDocPage(data);
    if (!ACTIVE.has(data.status)) scheduleCharts();
    onChange(() => applyStatus(data));
  });
  source.addEventListener("removed", (event) => {
    const { doc_id: docId } = JSON.parse(event.data);
    if (docView.id === docId) showDocGone(docId);
    scheduleCounts();
    onChange(() => removeDoc(docId));
  });
  // Changes were missed (the store was reset, or they left the server's log): the listing,
  // read again, is the truth; events after the reset apply on top of it.
  source.addEventListener("reset", () => loadListThenEvents());
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

// -- the dialog: confirmations, and the token when an action needs one ----------------------

let dialogDone = null;

/** Show the dialog; resolves true for OK. ``ok: null`` shows only the cancel button (a notice). */
function dialog({ title, text, ok = "OK", cancel = "Cancel", askToken = false }) {
  const box = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").hidden = ok === null;
  $("confirm-ok").textContent = ok || "";
  $("confirm-cancel").textContent = cancel;
  $("confirm-token").hidden = !askToken;
  $("confirm-token-input").value = "";
  box.returnValue = "";
  box.showModal();
  (askToken ? $("confirm-token-input") : $("confirm-cancel")).focus();
  return new Promise((resolve) => {
    dialogDone = resolve;
  });
}

function setUpDialog() {
  const box = $("confirm-dialog");
  $("confirm-ok").addEventListener("click", () => box.close("ok"));
  $("confirm-cancel").addEventListener("click", () => box.close("cancel"));
  $("confirm-token-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter") box.close("ok");
  });
  // Escape closes it too, with no return value: a cancel.
  box.addEventListener("close", () => {
    const done = dialogDone;
    dialogDone = null;
    if (done) done(box.returnValue === "ok");
  });
}

/** Ask for the API token (an action was refused without one); true if one was given. */
async function askTokenDialog() {
  const given = await dialog({
    title: "API token needed",
    text: "The server needs an API token for this. It is kept for this tab only.",
    ok: "Use this token",
    askToken: true,
  });
  const value = $("confirm-token-input").value.trim();
  if (!given || !value) return false;
  $("token").value = value;
  $("token").dispatchEvent(new Event("input"));
  return true;
}

/** A request with the token; a 401 asks for the token once and sends it again. */
async function send(method, url, body) {
  for (let round = 0; ; round += 1) {
    let status = 0;
    let answer = null;
    try {
      const headers = { Accept: "application/json", ...authHeaders() };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const response = await fetch(url, { method, headers, body: payload });
      status = response.status;
      answer = parseJson(await response.text());
    } catch {
      // status 0: unreachable
    }
    if (status !== 401 || round > 0 || !(await askTokenDialog())) return { status, body: answer };
  }
}

// -- a document's page (#/doc/<id>) -----------------------------------------------------------

/** The document shown on its page: its id, last status, and what of it is loaded. */
const docView = { id: null, data: null, at: 0, timelineTimer: null, outputOf: null };

function route() {
  const match = /^#\/doc\/(.+)$/.exec(location.hash);
  if (match) openDocPage(decodeURIComponent(match[1]));
  else closeDocPage();
}

function openDocPage(docId) {
  const fresh = docView.id !== docId;
  document.body.dataset.view = "doc";
  $("doc-page").hidden = false;
  if (fresh) {
    docView.id = docId;
    docView.data = null;
    docView.outputOf = null;
    $("doc-title").textContent = docId;
    $("doc-body").hidden = true;
    $("doc-missing").hidden = true;
    $("doc-action-error").hidden = true;
    for (const id of ["doc-retry", "doc-cancel", "doc-delete"]) $(id).hidden = true;
    $("doc-badge").hidden = true;
  }
  window.scrollTo(0, 0);
  $("doc-page").focus();
  loadDocPage(docId);
}

function closeDocPage() {
  const wasOpen = docView.id !== null;
  document.body.dataset.view = "list";
  $("doc-page").hidden = true;
  docView.id = null;
  docView.data = null;
  if (wasOpen) scheduleCharts();
}

async function loadDocPage(docId) {
  let answer = { status: 0, body: null };
  try {
    answer = await fetchJson(API.status(docId));
  } catch {
    // status 0: unreachable
  }
  if (docView.id !== docId) return;
  if (answer.status !== 200 || !answer.body) {
    showDocMissing(answer.status === 404 ? "No document has this id (or it was removed)." : errorMessage(answer.status, answer.body));
    return;
  }
  renderDocPage(answer.body);
  loadTimeline(docId);
}

function showDocMissing(text) {
  $("doc-body").hidden = true;
  $("doc-missing").hidden = false;
  $("doc-missing").textContent = text;
  for (const id of ["doc-retry", "doc-cancel", "doc-delete"]) $(id).hidden = true;
  $("doc-badge").hidden = true;
}

function showDocGone(docId) {
  showDocMissing("This document was removed.");
  announce(`${docId.slice(0, 12)} removed`);
}

/** A change of the document shown: its page follows (the timeline at most once a second). */
function followDocPage(data) {
  if (docView.data && timeKey(data.updated_at) < timeKey(docView.data.updated_at)) return;
  renderDocPage(data);
  if (docView.timelineTimer === null) {
    docView.timelineTimer = setTimeout(() => {
      docView.timelineTimer = null;
      if (docView.id === data.doc_id) loadTimeline(data.doc_id);
    }, 1000);
  }
}

function fact(list, term, value, title) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
  if (title) dd.title = title;
  list.append(dt, dd);
  return dd;
}

function localTime(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function renderDocPage(data) {
  docView.data = data;
  docView.at = performance.now();
  $("doc-missing").hidden = true;
  $("doc-body").hidden = false;
  $("doc-title").textContent = data.filename;
  $("doc-title").title = data.filename;
  const badge = $("doc-badge");
  badge.hidden = false;
  badge.textContent = STATUS_LABELS[data.status] || data.status;
  badge.className = `badge badge-${data.status}`;
  document.title = `${data.filename} · docstatus`;
  const percent = percentOf(data);
  $("doc-percent").textContent = `${percent}%`;
  setProgress($("doc-progress"), $("doc-progress").firstElementChild, percent, `${percent}%, ${badge.textContent}`);
  const meta = data.metadata || {};
  $("doc-error-box").hidden = !data.error;
  $("doc-error").textContent = data.error || "";
  $("doc-recovery-box").hidden = !meta.recovery;
  $("doc-recovery").textContent = meta.recovery || "";
  renderFacts(data);
  $("doc-metadata").textContent = JSON.stringify(meta, null, 2);
  $("doc-retry").hidden = data.status !== "failed" || meta.retryable === false;
  $("doc-cancel").hidden = !ACTIVE.has(data.status);
  $("doc-delete").hidden = ACTIVE.has(data.status);
  for (const id of ["doc-retry", "doc-cancel", "doc-delete"]) $(id).disabled = false;
  const attempt = meta.attempt || 1;
  if (data.status === "completed" && docView.outputOf !== `${data.doc_id}:${attempt}`) loadOutput(data);
  else if (data.status !== "completed") showOutputText(outputPending(data));
}

function renderFacts(data) {
  const meta = data.metadata || {};
  const list = $("doc-facts");
  list.replaceChildren();
  const idCell = fact(list, "Document id", data.doc_id);
  idCell.classList.add("doc-id-full");
  fact(list, "Stage", stageText(data));
  fact(list, "Attempt", meta.attempt || 1);
  fact(list, "Worker", meta.worker);
  fact(list, "Queued", localTime(data.started_at), data.started_at);
  fact(list, "Processing started", localTime(data.processing_started_at), data.processing_started_at);
  fact(list, "Finished", localTime(data.completed_at), data.completed_at);
  const since = ACTIVE.has(data.status) ? (performance.now() - docView.at) / 1000 : 0;
  const [run, waitText] = runAndWait(data, since);
  docView.elapsedCell = fact(list, "Run time", formatDuration(run));
  docView.waitCell = fact(list, "Queue wait", waitText.replace(/^wait(ed|ing) /, ""));
  fact(list, "Pages", data.total_pages ? pagesText(data) : null);
  fact(list, "Chunks", Number.isInteger(meta.total_chunks) ? `${meta.chunk ?? 0} of ${meta.total_chunks}` : null);
}

/** The live times of an active document on its page, advanced between events. */
function tickDocPage() {
  const data = docView.data;
  if (!data || !ACTIVE.has(data.status) || !docView.elapsedCell) return;
  const [run, waitText] = runAndWait(data, (performance.now() - docView.at) / 1000);
  docView.elapsedCell.textContent = formatDuration(run);
  docView.waitCell.textContent = waitText.replace(/^wait(ed|ing) /, "") || "—";
}

async function loadTimeline(docId) {
  let answer = { status: 0, body: null };
  try {
    answer = await fetchJson(API.timeline(docId));
  } catch {
    // unreachable: the next change asks again
  }
  if (docView.id !== docId || answer.status !== 200 || !answer.body) return;
  renderTimeline(answer.body);
}

function unitsText(stage) {
  if (stage.total === null || stage.total === undefined) return "";
  const what = stage.status === "embedding_visual" ? "pages" : "chunks";
  return `${stage.done ?? 0} of ${stage.total} ${what}`;
}

function renderTimeline(body) {
  $("doc-attempt").textContent = body.attempt > 1 ? `attempt ${body.attempt}` : "";
  // A bar per stage on one time axis: where it starts in the attempt, and how long it took.
  const first = body.stages.length ? Date.parse(body.stages[0].started_at) : 0;
  const total = body.stages.reduce((sum, stage) => sum + stage.seconds, 0);
  const share = (seconds) => (total > 0 ? (seconds / total) * 100 : 0);
  const items = body.stages.map((stage) => {
    const li = document.createElement("li");
    li.className = "timeline-stage";
    li.dataset.status = stage.status;
    const name = document.createElement("span");
    name.className = "timeline-name";
    name.textContent = STATUS_LABELS[stage.status] || stage.status;
    const when = document.createElement("span");
    when.className = "timeline-when";
    when.textContent = new Date(stage.started_at).toLocaleTimeString();
    when.title = stage.started_at;
    const took = document.createElement("span");
    took.className = "timeline-seconds num";
    took.textContent = formatDuration(stage.seconds);
    const units = document.createElement("span");
    units.className = "timeline-units";
    units.textContent = unitsText(stage);
    const bar = document.createElement("span");
    bar.className = "timeline-bar";
    const fill = document.createElement("span");
    fill.className = "timeline-fill";
    const offset = Math.min(share((Date.parse(stage.started_at) - first) / 1000), 99);
    fill.style.marginLeft = `${offset}%`;
    fill.style.width = `${Math.min(Math.max(share(stage.seconds), 1), 100 - offset)}%`;
    bar.append(fill);
    li.append(name, when, took, units, bar);
    return li;
  });
  $("doc-timeline").replaceChildren(...items);
}

function outputPending(data) {
  if (data.status === "failed") return "Nothing was stored: the document failed.";
  return "The output is stored when processing completes.";
}

function showOutputText(text) {
  $("doc-output-text").textContent = text;
  $("doc-output-link").hidden = true;
  $("doc-thumbs").replaceChildren();
}

async function loadOutput(data) {
  const attempt = (data.metadata || {}).attempt || 1;
  docView.outputOf = `${data.doc_id}:${attempt}`;
  let status = 0;
  let body = null;
  try {
    const response = await fetch(API.document(data.doc_id), { headers: { Accept: "application/json", ...authHeaders() } });
    status = response.status;
    body = parseJson(await response.text());
  } catch {
    // status 0: unreachable
  }
  if (docView.id !== data.doc_id) return;
  if (status === 401) {
    docView.outputOf = null;
    showOutputText("The output is readable with the API token only.");
    const ask = document.createElement("button");
    ask.type = "button";
    ask.className = "link-button";
    ask.textContent = "Enter the API token";
    ask.addEventListener("click", async () => {
      if ((await askTokenDialog()) && docView.data) loadOutput(docView.data);
    });
    $("doc-thumbs").replaceChildren(ask);
    return;
  }
  if (status !== 200 || !body) {
    showOutputText(status === 404 ? "No output is stored for this document." : errorMessage(status, body));
    return;
  }
  renderOutput(data.doc_id, body);
}

function renderOutput(docId, body) {
  const pages = body.num_pages ?? (body.pages || []).length;
  const chunks = body.num_chunks ?? (body.chunks || []).length;
  $("doc-output-text").textContent = `${pages} ${pages === 1 ? "page" : "pages"}, ${chunks} text ${chunks === 1 ? "chunk" : "chunks"} stored.`;
  const link = $("doc-output-link");
  link.href = API.document(docId);
  link.hidden = false;
  const thumbs = (body.pages || []).slice(0, THUMBNAILS).map((page) => {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.alt = `Page ${page.number}`;
    img.width = 120;
    li.append(img);
    showThumbnail(img, page.thumbnail_url.replace(/^\//, ""));
    return li;
  });
  $("doc-thumbs").replaceChildren(...thumbs);
}

/** A thumbnail fetched with the token (an <img> cannot send one), shown as a data: URL. */
async function showThumbnail(img, url) {
  try {
    const response = await fetch(url, { headers: authHeaders() });
    if (!response.ok) return;
    const blob = await response.blob();
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      img.src = String(reader.result);
    });
    reader.readAsDataURL(blob);
  } catch {
    // unreachable: the page's alt text stays
  }
}

async function docAction(kind) {
  const data = docView.data;
  if (!data) return;
  const name = data.filename;
  const asks = {
    cancel: [`Cancel ${name}?`, "Its processing stops and it is marked failed.", "Cancel the document"],
    delete: [`Delete ${name}?`, "Its status, its upload and its output are removed. This cannot be undone.", "Delete"],
  };
  if (kind in asks) {
    const [title, text, ok] = asks[kind];
    if (!(await dialog({ title, text, ok, cancel: "Keep it" }))) return;
  }
  const button = $(`doc-${kind}`);
  button.disabled = true;
  const requests = {
    retry: ["POST", API.requeue(data.doc_id)],
    cancel: ["POST", API.cancel(data.doc_id)],
    delete: ["DELETE", API.status(data.doc_id)],
  };
  const { status, body } = await send(...requests[kind]);
  if (status === 200) {
    $("doc-action-error").hidden = true;
    if (kind === "delete") {
      announce(`${name} deleted`);
      location.hash = "#/";
    } else if (body && body.doc_id === data.doc_id) {
      followDocPage(body);
    }
    return;
  }
  button.disabled = false;
  const reason = errorMessage(status, body);
  $("doc-action-error").hidden = false;
  $("doc-action-error").textContent = `${kind[0].toUpperCase()}${kind.slice(1)} refused: ${reason}`;
  announce(`${kind} of ${name} refused: ${reason}`, true);
}

function setUpDocPage() {
  for (const kind of ["retry", "cancel", "delete"]) $(`doc-${kind}`).addEventListener("click", () => docAction(kind));
  window.addEventListener("hashchange", route);
  route();
}

// -- throughput charts (SVG drawn here, from GET stats/throughput) ----------------------------

const SVG = "http://www.w3.org/2000/svg";
const CHART = { width: 300, height: 72 };
let chartsTimer = null;

function scheduleCharts() {
  if (chartsTimer === null) {
    chartsTimer = setTimeout(() => {
      chartsTimer = null;
      loadCharts();
    }, 2000);
  }
}

async function loadCharts() {
  if (docView.id !== null) return; // drawn when the list is shown again
  try {
    const { status, body } = await fetchJson(API.throughput);
    if (status === 200 && body && Array.isArray(body.buckets)) renderCharts(body);
  } catch {
    // unreachable: the next interval asks again
  }
}

function formatRate(value) {
  if (value === 0) return "0";
  if (value < 1) return String(Number(value.toPrecision(2)));
  return value < 10 ? value.toFixed(1) : String(Math.round(value));
}

function renderCharts(body) {
  const minutes = body.buckets.map((b) => b.minute);
  const pagesPerSecond = body.buckets.map((b) => b.pages / 60);
  const peakPages = Math.max(0, ...pagesPerSecond);
  drawChart($("chart-completed"), minutes, body.buckets.map((b) => b.completed), {
    summary: `${body.completed} in the hour`,
    point: (v) => `${v} finished`,
  });
  drawChart($("chart-pages"), minutes, pagesPerSecond, {
    summary: `${formatRate(body.pages / (body.minutes * 60))}/s average, ${formatRate(peakPages)}/s at most`,
    point: (v) => `${formatRate(v)} pages/s`,
  });
  drawChart($("chart-failed"), minutes, body.buckets.map((b) => b.failed), {
    summary: `${body.failed} in the hour`,
    point: (v) => `${v} failed`,
  });
  const ended = body.completed + body.failed;
  $("throughput-note").textContent = `${plural(body.pages, "page", "pages")} in ${plural(ended, "document", "documents")}`;
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

/** Bars, one per minute, scaled to the highest; each bar's tooltip says its minute and value. */
function drawChart(figure, minutes, values, { summary, point }) {
  const { width, height } = CHART;
  const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  const peak = Math.max(0, ...values);
  const step = width / Math.max(values.length, 1);
  values.forEach((value, i) => {
    const tall = peak > 0 ? (value / peak) * (height - 2) : 0;
    const bar = svgElement("rect", {
      x: (i * step + 0.5).toFixed(2),
      y: (height - tall).toFixed(2),
      width: Math.max(step - 1, 0.5).toFixed(2),
      height: tall.toFixed(2),
      class: "chart-bar",
    });
    const title = svgElement("title", {});
    title.textContent = `${new Date(minutes[i]).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}: ${point(value)}`;
    bar.append(title);
    svg.append(bar);
  });
  svg.append(svgElement("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "chart-base" }));
  const label = figure.querySelector(".chart-title").textContent;
  svg.setAttribute("aria-label", `${label}, over the last hour: ${summary}`);
  figure.querySelector(".chart-plot").replaceChildren(svg);
  figure.querySelector(".chart-value").textContent = summary;
  figure.dataset.peak = String(peak);
  figure.dataset.total = String(values.reduce((sum, v) => sum + v, 0));
}

function setUpCharts() {
  loadCharts();
  setInterval(loadCharts, CHARTS_EVERY_MS);
}

// -- bulk actions -------------------------------------------------------------------------

/** How many documents in ``statuses`` (and ``until``) match the search: the counts when they can
 * say, else the listing paged through, up to COUNT_PAGES pages (``more`` beyond). */
async function countMatching(statuses, until = null) {
  if (!search && !until) {
    await loadCounts();
    return { count: statuses.reduce((sum, s) => sum + countOf(s), 0), more: false };
  }
  let count = 0;
  let cursor = null;
  for (let page = 0; page < COUNT_PAGES; page += 1) {
    const url = listingUrl(cursor, { statuses, until, limit: COUNT_PAGE_SIZE, sort: "updated" });
    const { status, body } = await fetchJson(url);
    if (status !== 200 || !body) throw new Error(errorMessage(status, body));
    count += body.documents.length;
    cursor = body.next ?? null;
    if (cursor === null) return { count, more: false };
  }
  return { count, more: true };
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function setBulkResult(text, urgent = false) {
  const result = $("bulk-result");
  result.textContent = text;
  result.dataset.state = urgent ? "refused" : "done";
  announce(text, urgent);
}

/** A bulk POST to the end: the server works for a few seconds a call and answers ``next``
 * while documents remain; the answers' counts (``keys``) are added up. */
async function bulkAll(url, request, keys, progress) {
  const sums = Object.fromEntries(keys.map((key) => [key, 0]));
  let cursor = null;
  for (;;) {
    const { status, body } = await send("POST", url, cursor ? { ...request, cursor } : request);
    if (status !== 200 || !body) return { status, body };
    for (const key of keys) sums[key] += body[key] || 0;
    cursor = body.next ?? null;
    if (cursor === null) return { status, body: sums };
    $("bulk-result").textContent = progress(sums);
  }
}

async function bulkRetry() {
  const scope = search ? ` matching “${search}”` : "";
  let found;
  try {
    found = await countMatching(["failed"]);
  } catch (error) {
    setBulkResult(`Could not count the failed documents: ${error.message}`, true);
    return;
  }
  const title = "Retry failed documents";
  if (found.count === 0) {
    await dialog({ title, text: `No failed documents${scope}: nothing to retry.`, ok: null, cancel: "Close" });
    return;
  }
  const many = `${found.more ? "more than " : ""}${plural(found.count, "failed document", "failed documents")}`;
  const text = `Retry ${many}${scope}? Each starts a new attempt; those that failed for good (a damaged or unsupported file) are skipped.`;
  if (!(await dialog({ title, text, ok: "Retry them" }))) return;
  const request = { status: ["failed"] };
  if (search) request.q = search;
  const progress = (sums) => `Retried ${sums.retried} so far…`;
  const { status, body } = await bulkAll(API.bulkRetry, request, ["retried", "skipped"], progress);
  if (status === 200 && body) setBulkResult(`Retried ${body.retried}, skipped ${body.skipped}.`);
  else setBulkResult(`Retry refused: ${errorMessage(status, body)}`, true);
}

const AGES = { 3600: "1 hour", 86400: "1 day", 604800: "7 days", 2592000: "30 days" };

async function bulkDelete() {
  const age = Number($("bulk-age").value);
  const scope = search ? ` matching “${search}”` : "";
  const until = new Date(Date.now() - age * 1000).toISOString();
  const statuses = ["completed", "failed"];
  let found;
  try {
    found = await countMatching(statuses, until);
  } catch (error) {
    setBulkResult(`Could not count the finished documents: ${error.message}`, true);
    return;
  }
  const title = "Delete finished documents";
  const older = `finished over ${AGES[age] || `${age} seconds`} ago`;
  if (found.count === 0) {
    await dialog({ title, text: `No documents${scope} ${older}: nothing to delete.`, ok: null, cancel: "Close" });
    return;
  }
  const many = `${found.more ? "more than " : ""}${plural(found.count, "document", "documents")}`;
  const text = `Delete ${many}${scope} ${older} (completed or failed), with their uploads and output? This cannot be undone.`;
  if (!(await dialog({ title, text, ok: "Delete them" }))) return;
  const request = { older_than_seconds: age, status: statuses };
  if (search) request.q = search;
  const progress = (sums) => `Deleted ${sums.deleted} so far…`;
  const { status, body } = await bulkAll(API.bulkDelete, request, ["deleted"], progress);
  if (status === 200 && body) setBulkResult(`Deleted ${plural(body.deleted, "document", "documents")}.`);
  else setBulkResult(`Delete refused: ${errorMessage(status, body)}`, true);
}

function setUpBulk() {
  for (const [id, action] of [
    ["bulk-retry", bulkRetry],
    ["bulk-delete", bulkDelete],
  ]) {
    const button = $(id);
    button.addEventListener("click", async () => {
      applySearch(); // the documents it acts on are those the search box names now
      button.disabled = true;
      try {
        await action();
      } finally {
        button.disabled = false;
      }
    });
  }
}

// -- start ------------------------------------------------------------------------------

function tick() {
  for (const doc of docs.values()) if (ACTIVE.has(doc.data.status)) renderTimes(doc);
  tickDocPage();
}

function start() {
  setUpToken();
  setUpDialog();
  setUpUploads();
  setUpSearch();
  setUpPaging();
  setUpBulk();
  setUpDocPage();
  $("filter").addEventListener("change", (event) => setFilter(event.target.value));
  for (const button of document.querySelectorAll(".count")) {
    button.addEventListener("click", () => setFilter(button.dataset.filter));
  }
  refreshSummary();
  connect();
  setUpWorkers();
  setUpCharts();
  setInterval(tick, 1000);
}

start();
