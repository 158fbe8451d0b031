// kvstore console: a key browser and a cluster page over the server's own API.
//
// Keys and values are untrusted: every piece of data reaches the page through textContent or
// element properties, never as markup (no innerHTML anywhere). The console only reads.
"use strict";

const TOKEN_KEY = "kvstore.token";
const POLL_MS = 2000;
const TEXT_PREVIEW_BYTES = 65536;
const HEX_PREVIEW_BYTES = 4096;

const $ = (id) => document.getElementById(id);

// ---- DOM helpers: text only -------------------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell instanceof Node ? wrap(cell) : el("td", cell));
  return tr;
}

function placeholder(text, columns) {
  const td = el("td");
  td.colSpan = columns;
  td.appendChild(el("em", text));
  const tr = document.createElement("tr");
  tr.appendChild(td);
  return tr;
}

function wrap(node) {
  const td = document.createElement("td");
  td.appendChild(node);
  return td;
}

function setRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// ---- formatting ------------------------------------------------------------------------

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function formatCount(n) {
  return n === null || n === undefined ? "?" : Number(n).toLocaleString("en");
}

function formatSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(2)} ms`;
  return `${s.toFixed(2)} s`;
}

function formatDuration(ms) {
  if (ms <= 0) return "expired";
  let s = Math.ceil(ms / 1000);
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  if (s || !parts.length) parts.push(`${s}s`);
  return parts.slice(0, 2).join(" ");
}

function formatRate(perSecond) {
  if (perSecond === null || !isFinite(perSecond)) return "–";
  return perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1);
}

// ---- API access ------------------------------------------------------------------------

class Refused extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  if (response.status === 401) {
    const rejected = token() !== null;
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken(rejected ? "That token was not accepted." : "");
    throw new Refused("a token is required");
  }
  if (response.status === 403) {
    throw new Refused(`this token may not read here (${await problemDetail(response)})`);
  }
  if (!response.ok) throw new Error(`${response.status}: ${await problemDetail(response)}`);
  return response;
}

async function problemDetail(response) {
  try {
    const problem = await response.json();
    return problem.detail || problem.title || response.statusText;
  } catch {
    return response.statusText;
  }
}

function keyPath(key) {
  return encodeURIComponent(key);
}

// ---- token prompt ----------------------------------------------------------------------

function askForToken(message) {
  $("token-panel").hidden = false;
  $("keys-page").hidden = true;
  $("cluster-page").hidden = true;
  $("token-error").textContent = message || "";
  $("token-input").focus();
  showTokenState();
}

function showTokenState() {
  $("token-state").textContent = token() ? "token set for this tab" : "";
  $("forget-token").hidden = !token();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  $("token-input").value = "";
  $("token-panel").hidden = true;
  showTokenState();
  route();
});

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
  route();
});

// ---- TTL countdowns: every element with data-expires-at ticks once a second -------------

function ttlCell(expiresAt) {
  const span = el("span", "", "ttl");
  if (expiresAt === null || expiresAt === undefined) {
    span.textContent = "persistent";
  } else {
    span.dataset.expiresAt = String(expiresAt);
    span.title = new Date(expiresAt).toISOString();
    span.textContent = formatDuration(expiresAt - Date.now());
  }
  return span;
}

setInterval(() => {
  for (const span of document.querySelectorAll("[data-expires-at]")) {
    span.textContent = formatDuration(Number(span.dataset.expiresAt) - Date.now());
  }
}, 1000);

// ---- key browser -----------------------------------------------------------------------

const browser = { search: null, cursors: [null], page: 0, asked: 0, selected: null, bytes: null, view: "text" };

// The search as it was submitted: a later page follows its cursor, which carries the prefix,
// direction and position, whatever the form says meanwhile.
function listingPath(cursor) {
  const search = browser.search;
  const params = new URLSearchParams({ limit: search.limit });
  if (cursor) {
    params.set("cursor", cursor);
  } else {
    if (search.prefix) params.set("prefix", search.prefix);
    if (search.reverse) params.set("reverse", "true");
  }
  return `/v1/kv?${params}`;
}

function takeSearch() {
  browser.search = { prefix: $("prefix").value, limit: $("limit").value, reverse: $("reverse").checked };
  browser.cursors = [null];
  browser.page = 0;
}

async function loadPage() {
  $("keys-error").textContent = "";
  const asked = ++browser.asked; // an answer to an earlier search or page must not overwrite a later one
  let listing;
  try {
    listing = await (await api(listingPath(browser.cursors[browser.page]))).json();
  } catch (error) {
    if (asked === browser.asked && $("token-panel").hidden) $("keys-error").textContent = error.message;
    return;
  }
  if (asked !== browser.asked) return;
  const rows = listing.items.map((item) => {
    const link = el("button", item.key, "key");
    link.type = "button";
    link.addEventListener("click", () => openKey(item.key));
    const tr = row([link, String(item.version), ttlCell(item.expires_at)]);
    tr.dataset.key = item.key;
    return tr;
  });
  setRows($("keys-body"), rows);
  if (!rows.length) setRows($("keys-body"), [placeholder("no keys", 3)]);
  browser.cursors[browser.page + 1] = listing.next;
  browser.cursors.length = browser.page + 2;
  $("previous-page").disabled = browser.page === 0;
  $("next-page").disabled = !listing.next;
  $("page-info").textContent = `page ${browser.page + 1}, ${listing.items.length} key(s)`;
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  takeSearch();
  loadPage();
});
$("next-page").addEventListener("click", () => {
  browser.page += 1;
  loadPage();
});
$("previous-page").addEventListener("click", () => {
  browser.page = Math.max(0, browser.page - 1);
  loadPage();
});

const DETAIL_FIELDS = ["detail-shard", "detail-version", "detail-size", "detail-ttl", "detail-value", "detail-note"];

async function openKey(key) {
  browser.selected = key;
  $("detail").hidden = false;
  $("detail-key").textContent = key;
  $("detail-error").textContent = "";
  for (const id of DETAIL_FIELDS) $(id).textContent = "…";
  for (const tr of $("keys-body").children) tr.classList.toggle("selected", tr.dataset.key === key);
  try {
    const [value, place] = await Promise.all([api(`/v1/kv/${keyPath(key)}`), api(`/v1/locate/${keyPath(key)}`)]);
    if (browser.selected !== key) return;
    const placed = await place.json();
    $("detail-shard").textContent = placed.fallback ? `${placed.shard} (moving from ${placed.fallback})` : placed.shard;
    $("detail-version").textContent = (value.headers.get("ETag") || "").replaceAll('"', "");
    const expires = value.headers.get("Expires-At");
    $("detail-ttl").replaceChildren(ttlCell(expires === null ? null : Number(expires)));
    browser.bytes = new Uint8Array(await value.arrayBuffer());
    $("detail-size").textContent = `${formatBytes(browser.bytes.length)} (${browser.bytes.length} bytes)`;
    showValue(asText(browser.bytes) === null ? "hex" : browser.view);
  } catch (error) {
    if (browser.selected !== key) return;
    $("detail-error").textContent = error.message.startsWith("404")
      ? "this key is gone (deleted or expired since the listing)"
      : error.message;
    for (const id of DETAIL_FIELDS) if ($(id).textContent === "…") $(id).textContent = "";
  }
}

function asText(bytes) {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, TEXT_PREVIEW_BYTES));
  } catch {
    return null; // not UTF-8 (or cut inside a character): hex is the honest view
  }
}

function hexDump(bytes) {
  const lines = [];
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const chunk = bytes.subarray(offset, offset + 16);
    const hex = Array.from(chunk, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(chunk, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  return lines.join("\n");
}

function showValue(view) {
  const bytes = browser.bytes;
  if (bytes === null) return;
  const text = view === "text" ? asText(bytes) : null;
  const mode = text === null ? "hex" : "text";
  const limit = mode === "text" ? TEXT_PREVIEW_BYTES : HEX_PREVIEW_BYTES;
  $("detail-value").textContent = mode === "text" ? text : hexDump(bytes.subarray(0, limit));
  $("detail-value").className = mode;
  const notes = [];
  if (view === "text" && mode === "hex") notes.push("not UTF-8 text: shown as hex");
  if (bytes.length > limit) notes.push(`first ${formatBytes(limit)} shown`);
  $("detail-note").textContent = notes.join("; ");
  $("view-text").setAttribute("aria-pressed", String(mode === "text"));
  $("view-hex").setAttribute("aria-pressed", String(mode === "hex"));
}

$("view-text").addEventListener("click", () => {
  browser.view = "text";
  showValue("text");
});
$("view-hex").addEventListener("click", () => {
  browser.view = "hex";
  showValue("hex");
});

// ---- cluster page ----------------------------------------------------------------------

const cluster = { previous: null, timer: null };

// Prometheus's histogram_quantile over the difference of two cumulative bucket lists.
function quantile(q, buckets, before) {
  const counts = buckets.map(([bound, count], index) => [bound, count - (before ? before[index][1] : 0)]);
  const total = counts.length ? counts[counts.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [bound, count] of counts) {
    if (count >= rank) {
      if (bound === null) return lowerBound; // in the +Inf bucket: the highest finite bound, as Prometheus does
      return lowerBound + ((bound - lowerBound) * (rank - lowerCount)) / Math.max(count - lowerCount, 1e-9);
    }
    lowerBound = bound === null ? lowerBound : bound;
    lowerCount = count;
  }
  return lowerBound;
}

function errors(byStatus) {
  return Object.entries(byStatus).reduce((sum, [status, count]) => sum + (Number(status) >= 500 ? count : 0), 0);
}

function total(byStatus) {
  return Object.values(byStatus).reduce((sum, count) => sum + count, 0);
}

function renderCluster(status) {
  const previous = cluster.previous;
  const seconds = previous ? (status.at - previous.at) / 1000 : null;
  const rate = (now, before) => (seconds ? (now - before) / seconds : null);
  const down = status.shards.filter((shard) => !shard.ok).map((shard) => shard.name);
  $("cluster-summary").textContent = down.length
    ? `Shards failing: ${down.join(", ")}`
    : `All ${status.shards.length} shards answer.`;
  $("cluster-summary").className = down.length ? "error" : "ok";

  setRows(
    $("shards-body"),
    status.shards.map((shard) => {
      const rows = shard.rows || {};
      const sweeper = status.sweepers[shard.name] || {};
      const before = previous && previous.sweepers[shard.name];
      const share = document.createElement("meter");
      share.min = 0;
      share.max = 1;
      share.value = shard.share;
      const shareCell = el("span");
      shareCell.append(share, ` ${(shard.share * 100).toFixed(1)}%`);
      const tr = row([
        shard.name,
        shard.backend,
        shard.primary.reachable ? (shard.error ? `up, ${shard.error}` : "up") : `DOWN: ${shard.primary.error}`,
        shareCell,
        formatCount(rows.total),
        formatCount(rows.live),
        formatCount(rows.dead),
        before && sweeper.deleted_rows !== undefined
          ? formatRate(rate(sweeper.deleted_rows, before.deleted_rows || 0))
          : "–",
        sweeper.stale_ratio === undefined ? "–" : `${(sweeper.stale_ratio * 100).toFixed(1)}%`,
      ]);
      tr.dataset.shard = shard.name;
      tr.classList.toggle("failing", !shard.ok);
      return tr;
    }),
  );

  const counted = status.shards.map((shard) => shard.counted_at).filter((at) => at !== null);
  $("rows-note").textContent = counted.length
    ? `Rows counted ${formatDuration(status.at - Math.min(...counted) + 1)} ago ` +
      "(at most every 30 s: a count scans the table); rates and the stale ratio are live."
    : "";

  const replicas = status.shards.flatMap((shard) => shard.replicas);
  setRows(
    $("replicas-body"),
    replicas.length
      ? replicas.map((replica) =>
          row([
            replica.node,
            replica.reachable === null ? "?" : replica.reachable ? "yes" : "NO",
            replica.in_rotation ? "yes" : "no",
            replica.lag_s === null ? "–" : formatSeconds(replica.lag_s),
            replica.problem || "",
          ]),
        )
      : [placeholder("no replicas configured", 5)],
  );

  const migration = status.migration;
  $("ring-summary").textContent =
    `Ring epoch ${status.ring.epoch}, phase ${status.ring.phase}` +
    (migration ? `; migration ${migration.migration}` : "; no migration in progress") +
    (migration && migration.error ? ` (progress unknown: ${migration.error})` : "");
  $("migration-table").hidden = !migration;
  if (migration) {
    setRows(
      $("migration-body"),
      migration.sources.map((source) => {
        const bar = document.createElement("progress");
        bar.max = 1;
        const fraction = source.done ? 1 : source.rows_estimate ? Math.min(source.scanned / source.rows_estimate, 1) : 0;
        bar.value = fraction;
        const cell = el("span");
        cell.append(bar, source.done ? " done" : ` ${(fraction * 100).toFixed(0)}%`);
        return row([
          source.shard,
          cell,
          formatCount(source.scanned),
          formatCount(source.copied),
          source.rate_per_s === null ? "–" : `${formatRate(source.rate_per_s)} rows/s`,
          source.eta_s === null ? "–" : formatDuration(source.eta_s * 1000),
        ]);
      }),
    );
  }

  const ops = Object.keys(status.requests).sort();
  setRows(
    $("requests-body"),
    ops.map((op) => {
      const now = status.requests[op];
      const before = previous && previous.requests[op];
      const latency = now.latency;
      const window = before
        ? { count: latency.count - before.latency.count, sum: latency.sum - before.latency.sum }
        : latency;
      const buckets = before ? before.latency.buckets : null;
      const tr = row([
        op,
        before ? formatRate(rate(total(now.by_status), total(before.by_status))) : "–",
        before ? formatRate(rate(errors(now.by_status), errors(before.by_status))) : "–",
        window.count > 0 ? formatSeconds(window.sum / window.count) : "–",
        formatSeconds(quantile(0.5, latency.buckets, buckets)),
        formatSeconds(quantile(0.99, latency.buckets, buckets)),
        formatCount(total(now.by_status)),
      ]);
      tr.dataset.op = op;
      return tr;
    }),
  );
  cluster.previous = status;
}

async function pollCluster() {
  clearTimeout(cluster.timer);
  if ($("cluster-page").hidden) return;
  try {
    renderCluster(await (await api("/v1/status")).json());
    $("cluster-error").textContent = "";
  } catch (error) {
    if ($("token-panel").hidden) $("cluster-error").textContent = error.message;
    if (error instanceof Refused) return;
  }
  cluster.timer = setTimeout(pollCluster, POLL_MS);
}

// ---- pages -----------------------------------------------------------------------------

function route() {
  const page = location.hash === "#cluster" ? "cluster" : "keys";
  $("token-panel").hidden = true;
  $("keys-page").hidden = page !== "keys";
  $("cluster-page").hidden = page !== "cluster";
  $("nav-keys").classList.toggle("current", page === "keys");
  $("nav-cluster").classList.toggle("current", page === "cluster");
  showTokenState();
  if (page === "cluster") {
    cluster.previous = null;
    pollCluster();
  } else {
    if (!browser.search) takeSearch();
    loadPage();
  }
}

window.addEventListener("hashchange", route);
route();
