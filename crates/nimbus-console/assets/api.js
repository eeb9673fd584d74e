// The signed API client. The access key id and secret live in sessionStorage only (gone when
// the tab closes; never in a URL, a cookie or a log); every request is SigV4-signed with them.

import { sign } from "./sigv4.js";

const STORE = "nimbus.credentials";

export function credentials() {
  try {
    const c = JSON.parse(sessionStorage.getItem(STORE) || "null");
    return c && c.keyId && c.secret ? c : null;
  } catch {
    return null;
  }
}

export function setCredentials(keyId, secret) {
  sessionStorage.setItem(STORE, JSON.stringify({ keyId, secret }));
}

export function signOut() {
  sessionStorage.removeItem(STORE);
}

/** An API error: HTTP status, the server's error type and message. */
export class ApiError extends Error {
  constructor(status, type, message) {
    super(`${type}: ${message}`);
    this.status = status;
    this.type = type;
  }
}

function url(path, query) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, v);
  }
  return u;
}

async function signedFetch(method, path, { query, body, headers = {}, signal, unsigned } = {}) {
  const u = url(path, query);
  let text = body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body);
  const h = { ...headers };
  if (text !== "" && !h["content-type"]) h["content-type"] = "application/json";
  const c = credentials();
  const sent = c && !unsigned ? await sign({ method, url: u, headers: h, body: text }, c) : h;
  return fetch(u, { method, headers: sent, body: text === "" ? undefined : text, signal, cache: "no-store" });
}

async function errorOf(resp) {
  const text = await resp.text();
  let type = resp.headers.get("x-amzn-errortype") || `HTTP ${resp.status}`;
  let message = text;
  try {
    const j = JSON.parse(text);
    type = j.type || j.__type || type;
    message = j.message || j.Message || text;
  } catch { /* not JSON */ }
  return new ApiError(resp.status, String(type).split(":")[0], message);
}

/** A signed request answering JSON (or null for 204). Throws ApiError for non-2xx (unless
 * `anyStatus`: health answers 503 with its report). */
export async function api(method, path, opts = {}) {
  const resp = await signedFetch(method, path, opts);
  if (!resp.ok && !opts.anyStatus) throw await errorOf(resp);
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, query, opts = {}) => api("GET", path, { ...opts, query });

/** Like `get`, but null when the endpoint is missing (404/405/501: an older server). */
export async function getOptional(path, query) {
  try {
    return await get(path, query);
  } catch (e) {
    if (e instanceof ApiError && [404, 405, 501].includes(e.status) && !/function not found/i.test(e.message)) {
      return null;
    }
    throw e;
  }
}

/** Invokes a function synchronously with its log tail: {status, error, body, logs}. */
export async function invoke(name, payload) {
  const resp = await signedFetch("POST", `/2015-03-31/functions/${encodeURIComponent(name)}/invocations`, {
    body: payload,
    headers: { "x-amz-log-type": "Tail" },
  });
  if (!resp.ok && !resp.headers.get("x-amz-function-error")) throw await errorOf(resp);
  const logs = resp.headers.get("x-amz-log-result");
  let decoded = "";
  if (logs) {
    const bytes = Uint8Array.from(atob(logs), (ch) => ch.charCodeAt(0));
    decoded = new TextDecoder().decode(bytes);
  }
  return {
    status: resp.status,
    error: resp.headers.get("x-amz-function-error"),
    requestId: resp.headers.get("x-amzn-requestid"),
    body: await resp.text(),
    logs: decoded,
  };
}

/**
 * Follows a function's log: the server-sent events of `logs?follow=true` read with fetch()
 * and a ReadableStream (EventSource cannot sign requests); on a server without the stream,
 * polls the listing every second. Calls onEntry(entry) per line until `signal` aborts.
 */
export async function followLogs(name, filters, onEntry, signal, onMode) {
  const path = `/v1/functions/${encodeURIComponent(name)}/logs`;
  const resp = await signedFetch("GET", path, {
    query: { follow: "true", limit: 1000, ...filters },
    headers: { accept: "text/event-stream" },
    signal,
  });
  if (!resp.ok) throw await errorOf(resp);
  if ((resp.headers.get("content-type") || "").startsWith("text/event-stream")) {
    onMode && onMode("stream");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (data) {
          try { onEntry(JSON.parse(data)); } catch { /* a malformed event is skipped */ }
        }
      }
    }
  }
  // An older server answered the listing: poll from its end.
  onMode && onMode("poll");
  let page = await resp.json();
  let next = page.next || 0;
  while (page.logs.length >= 1000) {
    page = await get(path, { after: next, limit: 1000 }, { signal });
    next = page.next;
  }
  while (!signal.aborted) {
    await new Promise((r) => setTimeout(r, 1000));
    if (signal.aborted) return;
    const page = await get(path, { after: next, limit: 1000 }, { signal });
    for (const e of page.logs) onEntry(e);
    next = page.next;
  }
}
