// DOM helpers, formatting, the virtual list and charts (uPlot, loaded on first use).

/** h("a", {href: "#/"}, "text", child…): an element; `on*` props become listeners. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "value") el.value = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const fmt = {
  num(n) {
    if (n === null || n === undefined) return "–";
    return Number(n).toLocaleString("en-US", { maximumFractionDigits: 2 });
  },
  ms(n) {
    return n === null || n === undefined ? "–" : `${Number(n).toFixed(n < 10 ? 2 : 0)} ms`;
  },
  pct(n) {
    return n === null || n === undefined || !isFinite(n) ? "–" : `${(n * 100).toFixed(1)} %`;
  },
  time(ms) {
    return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "–";
  },
  ago(ms) {
    if (!ms) return "–";
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  },
  bytes(n) {
    if (n === null || n === undefined) return "–";
    const u = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
  },
};

export function table(headers, rows, opts = {}) {
  return h("table", { class: opts.class },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", class: /^(#|[A-Z0-9 ]*count|p\d\d)/i.test(x) ? "num" : null }, x)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c)))))
      : h("tr", {}, h("td", { colspan: String(headers.length), class: "muted" }, opts.empty || "None."))));
}

export function card(label, value, cls) {
  return h("div", { class: "card" }, h("div", { class: `v ${cls || ""}` }, value), h("div", { class: "k" }, label));
}

export function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, e instanceof Error ? e.message : String(e));
}

/**
 * A virtual list: only the rows in view (plus a margin) are in the DOM, so 1,000 or 100,000
 * rows render as fast as 30. `render(item)` returns a row element; rows are `--row` high.
 */
export function virtualList(head, items, render, rowHeight = 32) {
  const spacer = h("div", { class: "spacer" });
  const box = h("div", { class: "vlist", role: "table" }, head, spacer);
  let data = items;
  let drawn = "";
  const draw = () => {
    const top = box.scrollTop;
    const first = Math.max(0, Math.floor(top / rowHeight) - 10);
    const last = Math.min(data.length, Math.ceil((top + (box.clientHeight || 800)) / rowHeight) + 10);
    const key = `${first}:${last}:${data.length}`;
    if (key === drawn) return;
    drawn = key;
    spacer.style.height = `${data.length * rowHeight}px`;
    const rows = [];
    for (let i = first; i < last; i++) {
      const row = render(data[i]);
      row.style.top = `${i * rowHeight}px`;
      rows.push(row);
    }
    spacer.replaceChildren(...rows);
  };
  box.addEventListener("scroll", () => requestAnimationFrame(draw), { passive: true });
  draw();
  return {
    el: box,
    set(items2) { data = items2; drawn = ""; draw(); },
    redraw() { drawn = ""; draw(); },
  };
}

let uplot;
/** Loads the vendored uPlot once (a same-origin script: allowed by the CSP). */
export function loadUplot() {
  if (!uplot) {
    uplot = new Promise((resolve, reject) => {
      document.head.append(h("link", { rel: "stylesheet", href: "vendor/uPlot.min.css" }));
      const s = h("script", { src: "vendor/uPlot.iife.min.js" });
      s.addEventListener("load", () => resolve(window.uPlot));
      s.addEventListener("error", () => reject(new Error("could not load the chart library")));
      document.head.append(s);
    });
  }
  return uplot;
}

const COLORS = ["#1f6feb", "#d9480f", "#2f9e44", "#ae3ec9", "#f08c00", "#0c8599"];

/**
 * A time-series chart of `points` (the metrics API's shape: `t` in ms, ascending, gaps
 * omitted) for `series` [{key, label}], with every period of the window filled (0 for
 * counters, null for percentiles).
 */
export async function chart(title, points, series, { period = 60, since = 3600, gapsAreZero = true } = {}) {
  const box = h("div", { class: "chart", "data-chart": title }, h("h3", {}, title));
  const uPlot = await loadUplot();
  const step = period * 1000;
  const end = Math.floor(Date.now() / step) * step;
  const start = end - Math.floor((since * 1000) / step) * step;
  const byT = new Map(points.map((p) => [p.t, p]));
  const xs = [];
  const ys = series.map(() => []);
  for (let t = start; t <= end; t += step) {
    xs.push(t / 1000);
    const p = byT.get(t);
    series.forEach((s, i) => ys[i].push(p ? p[s.key] ?? null : gapsAreZero ? 0 : null));
  }
  const dark = matchMedia("(prefers-color-scheme: dark)").matches;
  const axis = { stroke: dark ? "#9aa4af" : "#5b6470", grid: { stroke: dark ? "#2a313a" : "#e5e8ec" } };
  const room = document.getElementById("main").clientWidth - 32;
  const width = Math.max(300, Math.floor(room >= 960 ? room / 2 - 36 : room - 24));
  new uPlot({
    width, height: 180,
    scales: { x: { time: true } },
    axes: [axis, axis],
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false, points: { show: true, size: 4 } }))],
  }, [xs, ...ys], box);
  return box;
}
