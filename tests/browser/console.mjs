// Drives the web console (/ui/) in real headless Chromium with playwright-core; run by
// tests/e2e/console.rs, which starts the server and passes what to check in the environment:
//   NIMBUS_URL, ADMIN_ID, ADMIN_SECRET, FUNCTION, STEPS (comma-separated, in order), and for
//   some steps RO_ID/RO_SECRET (readonly), DEAD_FUNCTION (redrive), DLQ and its SOURCE
//   (queueredrive), MATCH_RULE and EVENT_ID (busmatches), ALARM (alarms), EXPECT_FUNCTIONS
//   (firstpaint), SHOTS (a directory: screenshots of the pages visited).
// Prints one JSON line per step; exits 1 with the reason at the first failure.

import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env("NIMBUS_URL");
const FUNCTION = process.env.FUNCTION || "";
const STEPS = env("STEPS").split(",").filter(Boolean);
const SHOTS = process.env.SHOTS || "";
const TIMEOUT = 15000;

function check(cond, message) {
  if (!cond) throw new Error(message);
}

const problems = [];

async function newPage(browser, scheme = "light") {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: scheme });
  const page = await ctx.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  return page;
}

async function signIn(page, id, secret) {
  await page.goto(`${BASE}/ui/`);
  await page.fill("#key-id", id);
  await page.fill("#key-secret", secret);
  await page.click("#signin");
  await page.waitForSelector("#nav:not([hidden])");
  await page.waitForSelector("main h1");
}

async function shot(page, name) {
  if (!SHOTS) return;
  await page.waitForTimeout(150);
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: false });
}

async function openFunction(page, name) {
  await page.goto(`${BASE}/ui/#/functions`);
  await page.waitForSelector(`.vrow[data-name="${name}"]`);
  await page.fill("#fn-search", name);
  await page.click(`.vrow[data-name="${name}"] a`);
  await page.waitForFunction((n) => document.querySelector("main h1")?.textContent === n, name);
}

/** A signed request from inside the page, with the page's own API module. */
function pageApi(page, method, p, body) {
  return page.evaluate(async ([method, p, body]) => {
    const m = await import("/ui/api.js");
    try {
      return { ok: true, data: await m.api(method, p, body === undefined ? {} : { body }) };
    } catch (e) {
      return { ok: false, status: e.status, type: e.type, message: e.message };
    }
  }, [method, p, body]);
}

const steps = {
  async signin({ page }) {
    await signIn(page, env("ADMIN_ID"), env("ADMIN_SECRET"));
    const who = await page.textContent("#who");
    check(who.includes(env("ADMIN_ID")), `the header names the key: ${who}`);
    const stored = await page.evaluate(() => JSON.stringify(sessionStorage));
    check(stored.includes(env("ADMIN_ID")), "credentials in sessionStorage");
    const cookies = await page.context().cookies();
    check(cookies.length === 0, `no cookie: ${JSON.stringify(cookies)}`);
    check(!page.url().includes(env("ADMIN_SECRET")), "no secret in the URL");
    return { who };
  },
  async overview({ page }) {
    await page.goto(`${BASE}/ui/#/`);
    await page.waitForFunction(() => document.querySelector("main h1")?.textContent === "Overview");
    await page.waitForSelector(".cards .card");
    const cards = await page.$$eval(".cards .card .k", (els) => els.map((e) => e.textContent));
    check(cards.includes("functions") && cards.includes("readiness"), `overview cards: ${cards}`);
    await shot(page, "overview");
    return { cards };
  },
  async charts({ page }) {
    await page.goto(`${BASE}/ui/#/overview/1h`);
    await page.waitForSelector("[data-chart] canvas");
    const charts = await page.$$eval("[data-chart]", (els) => els.map((e) => e.dataset.chart));
    check(charts.length >= 4, `overview charts: ${charts}`);
    const top = await page.$$eval("main table tbody tr td:first-child", (els) => els.map((e) => e.textContent));
    check(top.includes(FUNCTION), `${FUNCTION} among the top functions: ${top}`);
    await shot(page, "overview");
    await openFunction(page, FUNCTION);
    await page.waitForSelector("#fn-charts [data-chart] canvas");
    return { charts };
  },
  async function({ page }) {
    await openFunction(page, FUNCTION);
    await page.waitForSelector("dl.kv");
    const config = await page.textContent("dl.kv");
    check(config.includes("runtime"), "configuration shown");
    if (process.env.RULE) {
      await page.waitForFunction((r) => document.querySelector("main")?.textContent.includes(`default/${r}`), process.env.RULE);
    }
    return { url: page.url() };
  },
  async functions({ page }) {
    await page.goto(`${BASE}/ui/#/functions`);
    await page.waitForSelector(".vrow");
    await shot(page, "functions");
    return {};
  },
  async invoke({ page }) {
    await openFunction(page, FUNCTION);
    await page.fill("#invoke-payload", JSON.stringify({ who: "console" }));
    await page.click("#invoke");
    await page.waitForSelector("#invoke-response");
    const response = await page.textContent("#invoke-response");
    check(response.includes("console"), `the response echoes the event: ${response}`);
    const logs = await page.textContent("#invoke-logs");
    check(/REPORT RequestId/.test(logs), `the call's logs: ${logs}`);
    await page.waitForSelector("#live-log div");
    await shot(page, "function");
    return { response: JSON.parse(response) };
  },
  async queueredrive({ page }) {
    const dlq = env("DLQ");
    await page.goto(`${BASE}/ui/#/queues`);
    const button = `button[data-action="nimbus:RedriveQueue"]`;
    await page.waitForSelector(button);
    const label = await page.textContent(button);
    check(label === `Redrive to ${env("SOURCE")}`, `the DLQ's redrive button names its source: ${label}`);
    await page.click(button);
    await page.waitForSelector("#queue-redriven");
    const said = await page.textContent("#queue-redriven");
    check(said.includes(` message(s) moved from ${dlq} to ${env("SOURCE")}; 0 left`), `redriven: ${said}`);
    await shot(page, "queues");
    return { said };
  },
  async busmatches({ page }) {
    const rule = env("MATCH_RULE");
    await page.goto(`${BASE}/ui/#/bus`);
    const details = `details[data-rule="default/${rule}"]`;
    await page.waitForSelector(details);
    await page.click(`${details} summary`);
    const text = await page.textContent(details);
    check(text.includes(env("EVENT_ID")) && text.includes("queued"), `the rule's recent match: ${text}`);
    await shot(page, "bus");
    return {};
  },
  async alarms({ page }) {
    const name = env("ALARM");
    await page.goto(`${BASE}/ui/#/alarms`);
    await page.waitForFunction(() => document.querySelector("main h1")?.textContent === "Alarms" && document.querySelector("main table"));
    const row = await page.textContent("main table tbody");
    check(row.includes(name) && row.includes(FUNCTION), `the alarm and its function: ${row}`);
    const link = await page.getAttribute(`main table tbody a[href="#/functions/${FUNCTION}"]`, "href");
    check(link, "the alarm links to its function");
    check(await page.isVisible('button[data-action="nimbus:DeleteAlarm"]'), "an admin may delete the alarm");
    await shot(page, "alarms");
    return {};
  },
  async readonly({ browser }) {
    const page = await newPage(browser, "dark");
    await signIn(page, env("RO_ID"), env("RO_SECRET"));
    await openFunction(page, FUNCTION);
    await page.waitForSelector("dl.kv");
    const buttons = await page.$$eval("main [data-action], #invoke", (els) => els.map((e) => e.textContent));
    check(buttons.length === 0, `a read-only key sees no write button: ${buttons}`);
    check(await page.isHidden("#nav-keys"), "no access keys page for a read-only key");
    const write = await pageApi(page, "DELETE", `/v1/functions/${FUNCTION}`);
    check(!write.ok && write.status === 403 && write.type === "AccessDeniedException", `a write answers 403: ${JSON.stringify(write)}`);
    const inv = await pageApi(page, "POST", `/2015-03-31/functions/${FUNCTION}/invocations`, "{}");
    check(!inv.ok && inv.status === 403, `an invocation answers 403: ${JSON.stringify(inv)}`);
    await shot(page, "function-read-only-dark");
    // The queues and alarms pages: no peek, redrive, purge or delete button.
    for (const [hash, title] of [["#/queues", "Queues"], ["#/alarms", "Alarms"]]) {
      await page.goto(`${BASE}/ui/${hash}`);
      await page.waitForFunction((t) => document.querySelector("main h1")?.textContent === t && document.querySelector("main table tbody tr td"), title);
      const shown = await page.$$eval("main [data-action]", (els) => els.map((e) => e.textContent));
      check(shown.length === 0, `a read-only key sees no write button on ${hash}: ${shown}`);
    }
    if (process.env.DLQ) {
      const redrive = await pageApi(page, "POST", `/v1/queues/${process.env.DLQ}/redrive`, {});
      check(!redrive.ok && redrive.status === 403, `a redrive answers 403: ${JSON.stringify(redrive)}`);
    }
    await page.context().close();
    return { write };
  },
  async livetail({ page }) {
    await openFunction(page, FUNCTION);
    await page.waitForFunction(() => /live \(server-sent events\)/.test(document.querySelector("main")?.textContent || ""));
    const marker = `tail-${Date.now()}`;
    const r = await page.evaluate(async ([name, marker]) => {
      const m = await import("/ui/api.js");
      const res = await m.invoke(name, JSON.stringify({ who: marker }));
      const returned = performance.now();
      const seen = await new Promise((resolve) => {
        const t0 = performance.now();
        const tick = () => {
          if (document.getElementById("live-log").textContent.includes(marker)) resolve(performance.now());
          else if (performance.now() - t0 > 5000) resolve(null);
          else requestAnimationFrame(tick);
        };
        tick();
      });
      return { status: res.status, after_ms: seen === null ? null : seen - returned };
    }, [FUNCTION, marker]);
    check(r.status === 200, `invoke: ${JSON.stringify(r)}`);
    check(r.after_ms !== null && r.after_ms <= 1000, `the call's log line in the live tail within 1 s: ${JSON.stringify(r)}`);
    return r;
  },
  async redrive({ page }) {
    const name = env("DEAD_FUNCTION");
    await page.goto(`${BASE}/ui/#/events/${name}/dead`);
    await page.waitForSelector('button[data-action="nimbus:RedriveEvent"]');
    await shot(page, "events");
    await page.click('button[data-action="nimbus:RedriveEvent"]');
    await page.waitForFunction(() => !document.querySelector('button[data-action="nimbus:RedriveEvent"]'));
    const left = await page.$$eval("main table tbody tr", (els) => els.map((e) => e.textContent));
    check(left.every((t) => !/dead/.test(t) || /None/.test(t)), `the redriven event left the dead list: ${left}`);
    return {};
  },
  async pages({ page }) {
    const pages = [
      ["#/queues", "queues", "Queues"], ["#/bus", "bus", "Event bus"], ["#/schedules", "schedules", "Schedules"],
      ["#/alarms", "alarms", "Alarms"],
      ["#/keys", "keys", "Access keys"], ["#/health", "health", "Health"],
      [`#/events/${FUNCTION}`, "events", "Async events and dead letters"],
    ];
    for (const [hash, name, title] of pages) {
      await page.goto(`${BASE}/ui/${hash}`);
      await page.waitForFunction((t) => document.querySelector("main h1")?.textContent === t && document.querySelector("main table"), title)
        .catch(async (e) => { throw new Error(`${hash}: ${e.message}; the page shows: ${await page.textContent("main")}; ${problems.join("; ")}`); });
      const text = await page.textContent("main");
      if (name === "queues" && process.env.QUEUE) check(text.includes(process.env.QUEUE), `queue listed: ${text}`);
      if (name === "schedules" && process.env.RULE) check(text.includes(process.env.RULE), `schedule listed: ${text}`);
      await shot(page, name);
    }
    return {};
  },
  async firstpaint({ page }) {
    const expected = Number(env("EXPECT_FUNCTIONS"));
    const runs = [];
    for (let i = 0; i < 5; i++) {
      await page.goto(`${BASE}/ui/?run=${i}#/functions`);
      await page.waitForFunction((n) => document.querySelector('[role="status"]')?.textContent === `${n} of ${n} functions`, expected);
      runs.push(await page.evaluate(() => ({
        fcp_ms: performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? null,
        list_painted_ms: performance.getEntriesByName("nimbus:functions-painted")[0]?.startTime ?? null,
        rows_in_dom: document.querySelectorAll(".vrow").length,
      })));
    }
    await shot(page, "functions");
    const med = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    check(runs.every((r) => r.rows_in_dom < 200), `the list renders only rows in view: ${JSON.stringify(runs)}`);
    // The list's request alone, signed from the page, with every field and with the
    // console's: time to the parsed answer and its size (alternating, 5 of each).
    const fetches = await page.evaluate(async () => {
      const m = await import("/ui/api.js");
      const out = { full: [], fields: [], full_bytes: 0, fields_bytes: 0 };
      for (let i = 0; i < 5; i++) {
        for (const [k, q] of [["full", {}], ["fields", { fields: "name,last_modified,config.runtime,config.memory_mb" }]]) {
          const t0 = performance.now();
          const r = await m.get("/v1/functions", q);
          out[k].push(performance.now() - t0);
          out[`${k}_bytes`] = JSON.stringify(r).length;
        }
      }
      return out;
    });
    return {
      functions: expected,
      median_list_painted_ms: med(runs.map((r) => r.list_painted_ms)),
      median_fcp_ms: med(runs.map((r) => r.fcp_ms)),
      median_list_request_full_ms: med(fetches.full),
      median_list_request_fields_ms: med(fetches.fields),
      full_bytes: fetches.full_bytes,
      fields_bytes: fetches.fields_bytes,
      runs,
    };
  },
  async signout({ page }) {
    await page.click("#signout");
    await page.waitForSelector("#key-id");
    const stored = await page.evaluate(() => sessionStorage.length);
    check(stored === 0, "sign out clears the session storage");
    return {};
  },
};

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
let failed = false;
try {
  const page = await newPage(browser);
  for (const name of STEPS) {
    const step = steps[name];
    check(step, `unknown step ${name}`);
    const t0 = Date.now();
    const out = await step({ browser, page });
    check(problems.length === 0, problems.join("\n"));
    console.log(JSON.stringify({ step: name, ok: true, ms: Date.now() - t0, ...out }));
  }
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
  if (problems.length) console.error(problems.join("\n"));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
