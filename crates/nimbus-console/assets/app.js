// The Nimbus console: sign-in, a hash router and the pages. Every page reads the same /v1 and
// Lambda APIs as the CLI, signed with the key the user signed in with; write buttons show
// only when GET /v1/whoami says the key's policy allows them (the server checks anyway).

import { api, get, getOptional, invoke, followLogs, setCredentials, credentials, signOut, ApiError } from "./api.js";
import { h, replace, fmt, table, card, errorBox, virtualList, chart } from "./ui.js";

const main = document.getElementById("main");
const enc = encodeURIComponent;
let me = null;
/** Resolves to `me` once GET /v1/whoami answered (pages load their data meanwhile). */
let meReady = Promise.resolve(null);
let page = null;

const can = (a, who = me) => Boolean(who && who.actions && who.actions[a]);
const fnArn = (name) => `arn:aws:lambda:us-east-1:000000000000:function:${name}`;

// ---- sign-in ------------------------------------------------------------------------------

async function whoami() {
  try {
    return await get("/v1/whoami");
  } catch (e) {
    if (e instanceof ApiError && [401, 403].includes(e.status)) return null;
    throw e;
  }
}

function showSignIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  const id = h("input", { id: "key-id", name: "key-id", autocomplete: "username", required: true, spellcheck: "false" });
  const secret = h("input", { id: "key-secret", name: "key-secret", type: "password", autocomplete: "current-password", required: true });
  const status = h("p", { role: "status" }, message ? errorBox(message) : null);
  const form = h("form", { class: "signin", onsubmit: async (ev) => {
    ev.preventDefault();
    setCredentials(id.value.trim(), secret.value.trim());
    try {
      meReady = whoami();
      me = await meReady;
      if (!me) throw new Error("The server refused this access key (unknown key or wrong secret).");
      showChrome();
      route();
    } catch (e) {
      signOut();
      replace(status, errorBox(e));
      secret.focus();
    }
  } },
  h("h1", {}, "Sign in to Nimbus"),
  h("p", { class: "muted" }, "With an access key (", h("code", {}, "nimbus keys create"),
    "). The secret stays in this tab's session storage and signs each request (SigV4); it is never sent."),
  h("label", { for: "key-id" }, "Access key id"), id,
  h("label", { for: "key-secret" }, "Secret access key"), secret,
  h("p", {}, h("button", { class: "primary", type: "submit", id: "signin" }, "Sign in")),
  status);
  replace(main, form);
  id.focus();
}

function showChrome() {
  document.getElementById("nav").hidden = false;
  document.getElementById("nav-keys").hidden = !can("nimbus:Admin");
  document.getElementById("who").textContent = me.auth
    ? `${me.name} (${me.key_id})${me.admin ? " · admin" : ""}`
    : "auth off: every request allowed";
  document.getElementById("signout").hidden = !credentials();
}

// ---- router -------------------------------------------------------------------------------

const pages = {
  "": overview,
  overview: overview,
  functions: (sig, name) => (name ? functionDetail(sig, name) : functionsList(sig)),
  events: events,
  queues: queues,
  bus: bus,
  schedules: schedules,
  alarms: alarms,
  keys: keys,
  health: health,
};

async function route() {
  if (!me && !credentials()) return;
  if (page) page.abort();
  page = new AbortController();
  const sig = page.signal;
  const [first = "", ...rest] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href").replace(/^#\/?/, "");
    if (target === first) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const fn = pages[first] || overview;
  try {
    await fn(sig, ...rest);
  } catch (e) {
    if (!sig.aborted) replace(main, h("h1", {}, "Error"), errorBox(e));
  }
}

const section = (title, ...body) => h("section", {}, h("h2", {}, title), ...body);

/** A button shown only when the key may do `action` (else nothing at all). */
function writeButton(who, action, label, onclick, cls) {
  if (!can(action, who)) return null;
  return h("button", { type: "button", class: cls || "", "data-action": action, onclick }, label);
}

// ---- overview -----------------------------------------------------------------------------

const WINDOWS = { "1h": { since: 3600, period: 60, label: "Last hour" }, "24h": { since: 86400, period: 900, label: "Last day" } };

async function overview(sig, win = "1h") {
  const w = WINDOWS[win] || WINDOWS["1h"];
  const [sum, fns, ready] = await Promise.all([
    getOptional("/v1/metrics/summary", { since: win, period: w.period }),
    get("/v1/functions", { fields: "name,last_modified,config.runtime" }),
    api("GET", "/v1/ready", { anyStatus: true }),
  ]);
  if (sig.aborted) return;
  const pick = h("div", { class: "toolbar" }, Object.entries(WINDOWS).map(([k, v]) =>
    h("a", { href: `#/overview/${k}`, "aria-current": k === win ? "page" : null }, v.label)));
  const head = [h("h1", {}, "Overview"), pick];
  const cards = h("div", { class: "cards" },
    card("functions", fmt.num(fns.functions.length)),
    card("readiness", ready.status, `status-${ready.status}`));
  const recent = fns.functions.slice().sort((a, b) => (a.last_modified < b.last_modified ? 1 : -1)).slice(0, 10)
    .map((f) => [h("a", { href: `#/functions/${enc(f.name)}` }, f.name), f.config.runtime, f.last_modified]);
  const deployed = section("Recently deployed", table(["function", "runtime", "last deploy"], recent, { empty: "No function yet." }));
  if (!sum) {
    replace(main, head, cards, h("p", { class: "muted", id: "no-history" },
      "No metrics history on this server: it runs with metrics off (nimbus serve --metrics off) or predates the history API."), deployed);
    return;
  }
  const pts = sum.points;
  const total = (k) => pts.reduce((a, p) => a + (p[k] || 0), 0);
  const p50s = pts.map((p) => p.duration_p50_ms).filter((v) => v !== null && v !== undefined).sort((a, b) => a - b);
  const p99 = Math.max(...pts.map((p) => p.duration_p99_ms ?? -Infinity));
  const inv = total("invocations");
  cards.append(
    card("invocations", fmt.num(inv)),
    card("errors", fmt.num(total("errors")), total("errors") ? "error" : ""),
    card("error rate", fmt.pct(inv ? total("errors") / inv : null)),
    card("throttles", fmt.num(total("throttles"))),
    card("cold starts", fmt.num(total("cold_starts"))),
    card("p50 (median period)", fmt.ms(p50s.length ? p50s[Math.floor(p50s.length / 2)] : null)),
    card("p99 (worst period)", fmt.ms(isFinite(p99) ? p99 : null)),
    card("peak concurrency", fmt.num(Math.max(0, ...pts.map((p) => p.max_concurrency || 0)))));
  const opts = { period: sum.period || w.period, since: w.since };
  const charts = h("div", { class: "charts" });
  const top = sum.functions.slice(0, 10).map((f) => [
    h("a", { href: `#/functions/${enc(f.function)}` }, f.function),
    fmt.num(f.invocations), fmt.num(f.errors), fmt.pct(f.invocations ? f.errors / f.invocations : null),
    fmt.num(f.throttles), fmt.num(f.cold_starts), fmt.ms(f.duration_p50_ms), fmt.ms(f.duration_p99_ms),
  ]);
  replace(main, head, cards, section("Activity", charts),
    section("Top functions", table(["function", "invocations", "errors", "error rate", "throttles", "cold starts", "p50", "p99"], top,
      { empty: "No invocation in this window." })), deployed);
  for (const c of await Promise.all([
    chart("Invocations, errors, throttles", pts, [{ key: "invocations", label: "invocations" }, { key: "errors", label: "errors" }, { key: "throttles", label: "throttles" }], opts),
    chart("Duration (ms)", pts, [{ key: "duration_p50_ms", label: "p50" }, { key: "duration_p99_ms", label: "p99" }], { ...opts, gapsAreZero: false }),
    chart("Cold starts", pts, [{ key: "cold_starts", label: "cold starts" }], opts),
    chart("Concurrency", pts, [{ key: "max_concurrency", label: "max concurrency" }], opts),
  ])) {
    if (!sig.aborted) charts.append(c);
  }
}

// ---- functions ----------------------------------------------------------------------------

const COLUMNS = [
  ["name", "Name"], ["runtime", "Runtime"], ["modified", "Last deploy"],
  ["invocations", "Calls (1 h)"], ["errorRate", "Error rate"], ["memory", "Memory"],
];

/** Only what the functions list shows (`?fields=`: a tenth of the full answer's bytes). */
const LIST_FIELDS = "name,last_modified,config.runtime,config.memory_mb";

async function functionsList(sig) {
  // The page's shell paints at once; the list follows, then the last hour's load (asked
  // only once the list is painted, so the two do not compete for the server).
  const search = h("input", { type: "search", id: "fn-search", placeholder: "Search by name or runtime", "aria-label": "Search functions" });
  const count = h("span", { class: "muted", role: "status" }, "Loading…");
  const box = h("div", { class: "vlist" });
  replace(main, h("h1", {}, "Functions"), h("div", { class: "toolbar" }, search, count), box);
  search.focus();
  const fns = (await get("/v1/functions", { fields: LIST_FIELDS })).functions;
  if (sig.aborted) return;
  const rows = fns.map((f) => ({
    name: f.name, runtime: f.config.runtime, modified: f.last_modified || "",
    memory: f.config.memory_mb, invocations: null, errorRate: null,
  }));
  let sort = { key: "name", dir: 1 };
  let query = search.value;
  const buttons = COLUMNS.map(([key, label]) => h("button", { type: "button", "data-sort": key, onclick: () => {
    sort = { key, dir: sort.key === key ? -sort.dir : key === "name" || key === "runtime" ? 1 : -1 };
    refresh();
  } }, label));
  const head = h("div", { class: "vhead", role: "row" }, buttons.map((b) => h("span", { role: "columnheader" }, b)));
  const render = (r) => h("div", { class: "vrow", role: "row", "data-name": r.name },
    h("a", { href: `#/functions/${enc(r.name)}` }, r.name),
    h("span", {}, r.runtime), h("span", { class: "muted" }, r.modified.slice(0, 19).replace("T", " ")),
    h("span", { class: "num" }, fmt.num(r.invocations)), h("span", { class: "num" }, fmt.pct(r.errorRate)),
    h("span", { class: "num" }, `${r.memory} MB`));
  const shown = () => {
    const q = query.toLowerCase();
    const out = q ? rows.filter((r) => r.name.toLowerCase().includes(q) || r.runtime.toLowerCase().includes(q)) : rows.slice();
    const k = sort.key;
    out.sort((a, b) => {
      const x = a[k] ?? -1, y = b[k] ?? -1;
      return (x < y ? -1 : x > y ? 1 : a.name < b.name ? -1 : 1) * sort.dir;
    });
    return out;
  };
  const vl = virtualList(head, shown(), render);
  function refresh() {
    const s = shown();
    for (const b of buttons) {
      if (b.dataset.sort === sort.key) b.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
      else b.removeAttribute("aria-sort");
    }
    count.textContent = `${s.length} of ${rows.length} functions`;
    vl.set(s);
  }
  search.addEventListener("input", () => { query = search.value; refresh(); });
  box.replaceWith(vl.el);
  refresh();
  await new Promise((r) => requestAnimationFrame(() => { performance.mark("nimbus:functions-painted"); r(); }));
  const sum = await getOptional("/v1/metrics/summary", { since: "1h" }).catch(() => null);
  if (!sum || sig.aborted) return;
  const load = new Map(sum.functions.map((f) => [f.function, f]));
  for (const r of rows) {
    const f = load.get(r.name);
    r.invocations = f ? f.invocations : 0;
    r.errorRate = f && f.invocations ? f.errors / f.invocations : null;
  }
  refresh();
}

/** The last invocations of a function, from the REPORT lines of its log. */
async function recentInvocations(name, sig) {
  const path = `/v1/functions/${enc(name)}/logs`;
  let after = 0;
  let reports = [];
  const traces = new Map();
  for (let i = 0; i < 20 && !sig.aborted; i++) {
    const page = await get(path, { after, limit: 10000 }, { signal: sig });
    for (const e of page.logs) {
      if (e.trace_id && e.request_id) traces.set(e.request_id, e.trace_id);
      if (e.stream === "platform" && e.line.startsWith("REPORT ")) reports.push(e);
    }
    reports = reports.slice(-20);
    if (page.logs.length < 10000) break;
    after = page.next;
  }
  return reports.reverse().map((e) => {
    const f = Object.fromEntries(e.line.split("\t").map((p) => p.split(": ")).filter((p) => p.length === 2));
    const rid = (f["REPORT RequestId"] || e.request_id || "").trim();
    return {
      time: e.ts_ms, requestId: rid, duration: f.Duration, cold: Boolean(f["Init Duration"]),
      status: f.Status === "error" ? `error (${f["Error Type"] || "?"})` : "ok",
      trace: e.trace_id || traces.get(rid) || "–",
    };
  });
}

async function triggersOf(name, fn) {
  const [mappings, buses] = await Promise.all([
    get("/2015-03-31/event-source-mappings", { FunctionName: name }).catch(() => ({ EventSourceMappings: [] })),
    get("/v1/buses").catch(() => ({ buses: [] })),
  ]);
  const arn = fnArn(name);
  const rules = [];
  for (const b of buses.buses) {
    const rs = await get(`/v1/buses/${enc(b.name)}/rules`).catch(() => ({ rules: [] }));
    for (const r of rs.rules) {
      if (r.targets.some((t) => t.arn === arn || t.arn.startsWith(arn + ":"))) rules.push(r);
    }
  }
  const rows = [];
  if (fn.function_url) rows.push(["URL", h("a", { href: fn.function_url }, fn.function_url)]);
  for (const r of fn.config.routes || []) rows.push(["route", r]);
  for (const r of rules) {
    rows.push([r.schedule ? "schedule" : "rule", `${r.bus}/${r.name}: ${r.schedule || JSON.stringify(r.pattern)} (${r.state})`]);
  }
  for (const m of mappings.EventSourceMappings || []) {
    rows.push(["queue mapping", `${m.EventSourceArn} (batch ${m.BatchSize}, ${m.State})`]);
  }
  return table(["kind", "trigger"], rows, { empty: "No trigger: invoked through the API only." });
}

async function functionDetail(sig, name) {
  const [fn, who, versions, aliases] = await Promise.all([
    get(`/v1/functions/${enc(name)}`),
    get("/v1/whoami", { function: name }),
    get(`/v1/functions/${enc(name)}/versions`),
    get(`/2015-03-31/functions/${enc(name)}/aliases`).catch(() => ({ Aliases: [] })),
  ]);
  if (sig.aborted) return;
  const c = fn.config;
  const config = h("dl", { class: "kv" }, [
    ["runtime", c.runtime], ["handler", c.handler], ["memory", `${c.memory_mb} MB`], ["timeout", `${c.timeout_s} s`],
    ["ephemeral storage", `${c.ephemeral_storage_mb} MB`], ["concurrency", c.concurrency ?? "unreserved"],
    ["network", c.network || "outbound"], ["description", c.description || "–"],
    ["environment", Object.keys(c.env || {}).join(", ") || "–"],
    ["code", `${fmt.bytes(fn.code_size)} · sha256 ${String(fn.code_sha256).slice(0, 16)}…`],
    ["last deploy", fn.last_modified], ["instances", `${fn.pool.idle} idle, ${fn.pool.busy} busy, ${fn.pool.waiting} waiting`],
  ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const versionRows = versions.versions.map((v) => [v.version, v.last_modified, String(v.code_sha256).slice(0, 12), v.config.description || ""]);
  const aliasRows = (aliases.Aliases || []).map((a) => {
    const w = a.RoutingConfig && a.RoutingConfig.AdditionalVersionWeights;
    const extra = w ? Object.entries(w).map(([v, x]) => `version ${v}: ${(x * 100).toFixed(0)} %`).join(", ") : "";
    return [a.Name, a.FunctionVersion, extra || "100 %"];
  });
  const actions = h("div", { class: "toolbar" },
    writeButton(who, "lambda:DeleteFunction", "Delete function", async () => {
      if (!confirm(`Delete ${name} and stop its instances?`)) return;
      try { await api("DELETE", `/v1/functions/${enc(name)}`); location.hash = "#/functions"; } catch (e) { actions.append(errorBox(e)); }
    }, "danger"));
  const charts = h("div", { class: "charts", id: "fn-charts" }, h("p", { class: "muted" }, "Loading charts…"));
  const recent = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const triggers = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  replace(main,
    h("h1", {}, name), actions,
    h("div", { class: "grid2" },
      h("div", {}, section("Configuration", config)),
      h("div", {}, section("Triggers", triggers),
        section("Aliases", table(["alias", "version", "weights"], aliasRows, { empty: "No alias." })))),
    section("Versions", table(["version", "published", "code", "description"], versionRows)),
    section("Metrics (last hour)", charts),
    can("lambda:InvokeFunction", who) ? invokeForm(name) : null,
    section("Live log", liveTail(name, sig)),
    section("Recent invocations", recent));
  triggersOf(name, fn).then((t) => replace(triggers, t), (e) => replace(triggers, errorBox(e)));
  recentInvocations(name, sig).then((rs) => replace(recent, table(["time", "request id", "duration", "cold", "status", "trace id"],
    rs.map((r) => [fmt.time(r.time), h("code", {}, r.requestId), r.duration, r.cold ? "cold" : "warm", h("span", { class: r.status === "ok" ? "ok" : "error" }, r.status), r.trace]),
    { empty: "No invocation logged yet." })), (e) => replace(recent, errorBox(e)));
  const m = await getOptional(`/v1/functions/${enc(name)}/metrics`, { since: "1h", period: 60 }).catch(() => null);
  if (sig.aborted) return;
  if (!m) {
    replace(charts, h("p", { class: "muted" }, "No metrics history on this server: it runs with metrics off (nimbus serve --metrics off) or predates the history API."));
    return;
  }
  const opts = { period: m.period, since: 3600 };
  replace(charts, ...(await Promise.all([
    chart("Invocations and errors", m.points, [{ key: "invocations", label: "invocations" }, { key: "errors", label: "errors" }, { key: "throttles", label: "throttles" }], opts),
    chart("Duration (ms)", m.points, [{ key: "duration_p50_ms", label: "p50" }, { key: "duration_p90_ms", label: "p90" }, { key: "duration_p99_ms", label: "p99" }], { ...opts, gapsAreZero: false }),
    chart("Cold starts and concurrency", m.points, [{ key: "cold_starts", label: "cold starts" }, { key: "max_concurrency", label: "max concurrency" }], opts),
  ])));
}

function invokeForm(name) {
  const editor = h("textarea", { id: "invoke-payload", "aria-label": "Event (JSON)", spellcheck: "false", value: "{}" });
  const out = h("div", { id: "invoke-result", role: "status" });
  const form = h("form", { onsubmit: async (ev) => {
    ev.preventDefault();
    let payload;
    try {
      payload = JSON.stringify(JSON.parse(editor.value || "null"));
    } catch (e) {
      replace(out, errorBox(`Not JSON: ${e.message}`));
      return;
    }
    replace(out, h("p", { class: "muted" }, "Invoking…"));
    try {
      const r = await invoke(name, payload);
      let body = r.body;
      try { body = JSON.stringify(JSON.parse(r.body), null, 2); } catch { /* not JSON */ }
      replace(out,
        h("p", {}, `Status ${r.status}`, r.error ? h("span", { class: "error" }, ` · function error: ${r.error}`) : null, ` · request ${r.requestId || "?"}`),
        h("h3", {}, "Response"), h("pre", { id: "invoke-response" }, body),
        h("h3", {}, "Logs of this call"), h("pre", { id: "invoke-logs" }, r.logs || "(none)"));
    } catch (e) {
      replace(out, errorBox(e));
    }
  } },
  h("label", { for: "invoke-payload" }, "Event (JSON)"), editor,
  h("div", { class: "toolbar" }, h("button", { type: "submit", class: "primary", id: "invoke", "data-action": "lambda:InvokeFunction" }, "Invoke")),
  out);
  return section("Invoke", form);
}

const LEVELS = ["", "ERROR", "WARN", "INFO", "DEBUG"];

function liveTail(name, pageSig) {
  const level = h("select", { "aria-label": "Level" }, LEVELS.map((l) => h("option", { value: l }, l || "all levels")));
  const text = h("input", { type: "search", placeholder: "Filter text", "aria-label": "Filter text" });
  const mode = h("span", { class: "muted", role: "status" });
  const out = h("pre", { class: "log", id: "live-log", "aria-live": "off" });
  let ctl = null;
  const matches = (e) => {
    const lv = level.value;
    if (lv && e.level && LEVELS.indexOf(e.level.toUpperCase()) > LEVELS.indexOf(lv)) return false;
    if (lv && !e.level && e.stream === "platform") return false;
    return !text.value || e.line.includes(text.value);
  };
  const start = () => {
    if (ctl) ctl.abort();
    ctl = new AbortController();
    pageSig.addEventListener("abort", () => ctl.abort(), { once: true });
    out.replaceChildren();
    mode.textContent = "connecting…";
    const filters = { level: level.value || undefined, grep: text.value || undefined };
    followLogs(name, filters, (e) => {
      if (!matches(e)) return;
      const line = h("div", { class: `l-${(e.level || e.stream || "").toLowerCase()}` },
        `${fmt.time(e.ts_ms).slice(11)} ${e.request_id ? e.request_id.slice(0, 8) : "--------"} ${e.line}`);
      const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      out.append(line);
      while (out.childElementCount > 2000) out.firstElementChild.remove();
      if (atEnd) out.scrollTop = out.scrollHeight;
    }, ctl.signal, (m) => { mode.textContent = m === "stream" ? "live (server-sent events)" : "live (polling every second)"; })
      .catch((e) => { if (!ctl.signal.aborted) mode.textContent = `stopped: ${e.message}`; });
  };
  level.addEventListener("change", start);
  let t;
  text.addEventListener("input", () => { clearTimeout(t); t = setTimeout(start, 300); });
  start();
  return h("div", {}, h("div", { class: "toolbar" }, level, text, mode), out);
}

// ---- async events -------------------------------------------------------------------------

async function events(sig, name, status = "") {
  const fns = (await get("/v1/functions", { fields: "name" })).functions.map((f) => f.name);
  if (sig.aborted) return;
  name = name || fns[0];
  const pickFn = h("select", { "aria-label": "Function", id: "events-function", onchange: () => { location.hash = `#/events/${enc(pickFn.value)}/${status}`; } },
    fns.map((n) => h("option", { value: n, selected: n === name }, n)));
  const pickStatus = h("select", { "aria-label": "Status", id: "events-status", onchange: () => { location.hash = `#/events/${enc(name)}/${pickStatus.value}`; } },
    ["", "pending", "running", "succeeded", "dead", "expired"].map((s) => h("option", { value: s, selected: s === status }, s || "every status")));
  const head = [h("h1", {}, "Async events and dead letters"), h("div", { class: "toolbar" }, pickFn, pickStatus)];
  if (!name) return replace(main, head, h("p", { class: "muted" }, "No function."));
  const [list, who] = await Promise.all([
    get(`/v1/functions/${enc(name)}/events`, { status, limit: 200 }),
    get("/v1/whoami", { function: name }),
  ]);
  if (sig.aborted) return;
  const detail = h("div", { id: "event-detail" });
  const rows = list.events.map((e) => [
    h("a", { href: "#", onclick: (ev) => { ev.preventDefault(); replace(detail, h("h3", {}, e.id), h("pre", {}, JSON.stringify(e, null, 2))); } }, h("code", {}, e.id)),
    h("span", { class: `status-${e.status}` }, e.status), e.attempts, fmt.time(e.created_ms), fmt.time(e.next_attempt_ms),
    e.last_error || "", ["dead", "expired"].includes(e.status)
      ? writeButton(who, "nimbus:RedriveEvent", "Redrive", async (ev) => {
        ev.target.disabled = true;
        try {
          await api("POST", `/v1/functions/${enc(name)}/events/${enc(e.id)}/redrive`);
          route();
        } catch (err) {
          ev.target.replaceWith(errorBox(err));
        }
      }) : null,
  ]);
  const counts = Object.entries(list.counts || {}).map(([k, v]) => card(k, fmt.num(v), `status-${k}`));
  replace(main, head, h("div", { class: "cards" }, counts),
    list.circuit ? h("p", { class: list.circuit.state === "closed" ? "muted" : "warn" },
      `Circuit breaker ${list.circuit.state}, ${list.circuit.consecutive_failures ?? 0} consecutive failure(s).`) : null,
    table(["id", "status", "attempts", "created", "next attempt", "last error", ""], rows, { empty: "No event." }), detail);
}

// ---- queues -------------------------------------------------------------------------------

/** Redrive buttons of a dead-letter queue: one per queue whose redrive policy names it. */
function redriveButtons(q, list, out) {
  return list.filter((src) => src.dead_letter === q.name).map((src) =>
    writeButton(me, "nimbus:RedriveQueue", `Redrive to ${src.name}`, async (ev) => {
      ev.target.disabled = true;
      try {
        const r = await api("POST", `/v1/queues/${enc(q.name)}/redrive`, { body: { destination: src.name } });
        replace(out, h("p", { id: "queue-redriven" }, `${r.moved} message(s) moved from ${r.source} to ${r.destination}; ${r.left} left.`));
        await queues(page.signal, out);
      } catch (e) { replace(out, errorBox(e)); ev.target.disabled = false; }
    }));
}

async function queues(sig, keep) {
  const [list] = await Promise.all([get("/v1/queues").then((r) => r.queues), meReady]);
  if (sig.aborted) return;
  const out = keep instanceof Node ? keep : h("div", { id: "queue-peek" });
  const rows = list.map((q) => {
    const s = q.stats || {};
    return [q.name, fmt.num((s.visible || 0) + (s.in_flight || 0) + (s.delayed || 0)), fmt.num(s.visible), fmt.num(s.in_flight), fmt.num(s.delayed),
      q.oldest_sent_ms ? fmt.ago(q.oldest_sent_ms) : "–",
      q.dead_letter ? `${q.dead_letter} after ${q.max_receive_count} receives` : "–",
      h("span", { class: "buttons" },
        writeButton(me, "nimbus:ReceiveMessage", "Peek", async () => {
          try {
            // A receive with a zero visibility timeout: the messages stay visible (their
            // receive count goes up by one, as with any receive).
            const r = await api("POST", `/v1/queues/${enc(q.name)}/receive`, { body: { max: 10, visibility_timeout: 0 } });
            replace(out, h("h2", {}, `${q.name}: ${r.messages.length} message(s)`),
              table(["id", "sent", "receives", "body"], r.messages.map((m) => [h("code", {}, m.id), fmt.time(m.sent_ms), m.receive_count, h("pre", {}, m.body)])));
          } catch (e) { replace(out, errorBox(e)); }
        }),
        redriveButtons(q, list, out),
        writeButton(me, "nimbus:PurgeQueue", "Purge", async () => {
          if (!confirm(`Delete every message of ${q.name}?`)) return;
          try { const r = await api("POST", `/v1/queues/${enc(q.name)}/purge`); replace(out, h("p", {}, `${r.purged} message(s) purged.`)); await queues(page.signal, out); } catch (e) { replace(out, errorBox(e)); }
        }, "danger"))];
  });
  replace(main, h("h1", {}, "Queues"),
    table(["queue", "depth", "visible", "in flight", "delayed", "oldest", "dead-letter queue", ""], rows, { empty: "No queue." }), out);
}

// ---- bus and schedules --------------------------------------------------------------------

async function allRules() {
  const buses = (await get("/v1/buses")).buses;
  const rules = await Promise.all(buses.map((b) => get(`/v1/buses/${enc(b.name)}/rules`).then((r) => r.rules)));
  return { buses, rules: rules.flat() };
}

const targets = (r) => r.targets.map((t) => h("div", {}, h("code", {}, t.arn.replace(/^arn:aws:[a-z]+:us-east-1:000000000000:/, ""))));

/** A rule's recent matches (newest first, kept in the server's memory): each event and
 * its hand-off to every target. */
function recentMatches(r) {
  const ms = r.recent_matches || [];
  if (!ms.length) return h("span", { class: "muted" }, r.schedule ? "–" : "none yet");
  const short = (arn) => arn.replace(/^arn:aws:[a-z]+:us-east-1:000000000000:/, "");
  return h("details", { "data-rule": `${r.bus}/${r.name}` }, h("summary", {}, `${ms.length} recent`),
    table(["time", "event id", "detail-type", "source", "targets"], ms.map((m) => [
      fmt.time(m.time_ms), h("code", {}, m.event_id), m.detail_type, m.source,
      m.targets.map((t) => h("div", {}, h("span", { class: t.result === "queued" ? "ok" : "error" }, t.result), " ",
        h("code", {}, short(t.arn)), t.error ? h("span", { class: "error" }, `: ${t.error}`) : null)),
    ]), { class: "inner" }));
}

async function bus(sig) {
  const { buses, rules } = await allRules();
  if (sig.aborted) return;
  replace(main, h("h1", {}, "Event bus"),
    buses.map((b) => section(`Bus ${b.name}`, table(["rule", "pattern or schedule", "state", "targets", "last fired", "recent matches"],
      rules.filter((r) => r.bus === b.name).map((r) => [r.name, h("code", {}, r.schedule || JSON.stringify(r.pattern)), r.state, targets(r),
        fmt.time(r.last_fired_ms), recentMatches(r)]),
      { empty: "No rule." }))));
}

const UNIT = { minute: 60, minutes: 60, hour: 3600, hours: 3600, day: 86400, days: 86400 };

/** The next firing of a `rate(...)` schedule; cron expressions are shown as they are. */
function nextFiring(r) {
  const m = /^rate\((\d+)\s+(\w+)\)$/.exec(r.schedule || "");
  if (!m || !r.enabled) return r.enabled ? "per the cron expression" : "disabled";
  const every = Number(m[1]) * (UNIT[m[2]] || 0) * 1000;
  let next = (r.last_fired_ms || r.created_ms) + every;
  while (next < Date.now()) next += every;
  return `${fmt.time(next)} (in ${Math.round((next - Date.now()) / 1000)} s)`;
}

async function schedules(sig) {
  const { rules } = await allRules();
  if (sig.aborted) return;
  const rows = rules.filter((r) => r.schedule).map((r) => [`${r.bus}/${r.name}`, h("code", {}, r.schedule), r.timezone || "UTC", r.state, targets(r), fmt.time(r.last_fired_ms), nextFiring(r)]);
  replace(main, h("h1", {}, "Schedules"), table(["rule", "schedule", "time zone", "state", "targets", "last fired", "next firing"], rows, { empty: "No schedule." }));
}

// ---- alarms -------------------------------------------------------------------------------

const OPS = { ">": "above", ">=": "at or above", "<": "below", "<=": "at or below" };

async function alarms(sig) {
  const [list] = await Promise.all([getOptional("/v1/alarms").then((r) => r && r.alarms), meReady]);
  if (sig.aborted) return;
  if (!list) {
    replace(main, h("h1", {}, "Alarms"), h("p", { class: "muted" }, "Alarms are not available on this server."));
    return;
  }
  const out = h("div", { role: "status" });
  const rows = list.map((a) => [
    a.name, h("a", { href: `#/functions/${enc(a.function)}` }, a.function),
    h("span", { class: `alarm-${a.state.toLowerCase()}` }, a.state), h("code", {}, a.metric),
    `${OPS[a.comparison] || a.comparison} ${fmt.num(a.threshold)} for ${a.datapoints_to_alarm} of ${a.evaluation_periods} × ${a.period} s`,
    h("span", {}, fmt.time(a.state_updated_ms), h("div", { class: "muted" }, a.state_reason || "")),
    writeButton(me, "nimbus:DeleteAlarm", "Delete", async (ev) => {
      if (!confirm(`Delete alarm ${a.name}?`)) return;
      ev.target.disabled = true;
      try { await api("DELETE", `/v1/alarms/${enc(a.name)}`); route(); } catch (e) { replace(out, errorBox(e)); }
    }, "danger"),
  ]);
  const counts = ["ALARM", "OK", "INSUFFICIENT_DATA"].map((st) =>
    card(st.toLowerCase().replace("_", " "), fmt.num(list.filter((a) => a.state === st).length), `alarm-${st.toLowerCase()}`));
  replace(main, h("h1", {}, "Alarms"), h("div", { class: "cards" }, counts), out,
    table(["alarm", "function", "state", "metric", "threshold", "last change", ""], rows, { empty: "No alarm." }));
}

// ---- access keys --------------------------------------------------------------------------

const READ_ONLY = { Statement: [{ Effect: "Allow", Action: ["lambda:Get*", "lambda:List*", "nimbus:Get*", "nimbus:List*"], Resource: "*" }] };

async function keys(sig) {
  await meReady;
  if (!can("nimbus:Admin")) {
    replace(main, h("h1", {}, "Access keys"), h("p", { class: "muted" }, "Only an admin key sees the access keys."));
    return;
  }
  const list = (await get("/v1/keys")).keys;
  if (sig.aborted) return;
  const created = h("div", { role: "status" });
  const name = h("input", { id: "new-key-name", "aria-label": "Name", placeholder: "name", required: true });
  const kind = h("select", { "aria-label": "Policy" }, h("option", { value: "read" }, "read-only"), h("option", { value: "admin" }, "admin"));
  const form = h("form", { class: "toolbar", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const k = await api("POST", "/v1/keys", { body: { name: name.value, policy: kind.value === "admin" ? "admin" : READ_ONLY } });
      replace(created, h("p", {}, "Created. The secret is shown once, here:"),
        h("pre", {}, `AccessKeyId:     ${k.AccessKeyId}\nSecretAccessKey: ${k.SecretAccessKey}`));
      form.reset();
    } catch (e) { replace(created, errorBox(e)); }
  } }, name, kind, h("button", { type: "submit", class: "primary" }, "Create key"));
  const rows = list.map((k) => [h("code", {}, k.AccessKeyId), k.name, k.created, h("pre", {}, JSON.stringify(k.policy)),
    k.AccessKeyId === me.key_id ? h("span", { class: "muted" }, "this key") : h("button", { type: "button", class: "danger", onclick: async () => {
      if (!confirm(`Delete access key ${k.AccessKeyId} (${k.name})?`)) return;
      try { await api("DELETE", `/v1/keys/${enc(k.AccessKeyId)}`); route(); } catch (e) { replace(created, errorBox(e)); }
    } }, "Delete")]);
  replace(main, h("h1", {}, "Access keys"), form, created, table(["id", "name", "created", "policy", ""], rows));
}

// ---- health -------------------------------------------------------------------------------

async function health(sig) {
  const [hl, ready] = await Promise.all([
    api("GET", "/v1/health", { anyStatus: true }),
    api("GET", "/v1/ready", { anyStatus: true }),
  ]);
  if (sig.aborted) return;
  const iso = hl.isolation || {};
  const inst = hl.instances || {};
  replace(main, h("h1", {}, "Health"),
    h("div", { class: "cards" },
      card("health", hl.status, `status-${hl.status}`), card("readiness", ready.status, `status-${ready.status}`),
      card("version", hl.version), card("isolation", `${iso.mode || "?"} / ${iso.level || "?"}`),
      card("instances", `${fmt.num(inst.count)} (${fmt.num(inst.busy)} busy)`), card("instance memory", fmt.bytes(inst.memory_bytes)),
      card("log store", `${fmt.bytes(hl.logs && hl.logs.file_bytes)} of ${fmt.bytes(hl.logs && hl.logs.limit_bytes)}`)),
    section("Checks", table(["check", "status", "detail"], (ready.checks || []).map((c) => [c.name, h("span", { class: `status-${c.status}` }, c.status), c.detail]))),
    section("Isolation report", table(["layer", "", "detail"], (iso.layers || []).map((l) => [l.name, h("span", { class: l.ok ? "ok" : "error" }, l.ok ? "on" : "off"), l.detail]))));
}

// ---- start --------------------------------------------------------------------------------

document.getElementById("signout").addEventListener("click", () => {
  signOut();
  me = null;
  if (page) page.abort();
  history.replaceState(null, "", "#/");
  showSignIn();
});
window.addEventListener("hashchange", route);

// With credentials in the session, the page loads its data while whoami answers (both
// signed with the same key); without, whoami tells whether auth is off.
(async () => {
  meReady = whoami();
  if (credentials()) route();
  try {
    me = await meReady;
  } catch (e) {
    if (page) page.abort();
    showSignIn(e);
    return;
  }
  if (!me) {
    if (page) page.abort();
    signOut();
    showSignIn();
    return;
  }
  showChrome();
  if (!credentials()) route();
})();
