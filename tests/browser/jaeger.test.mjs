// Drives the real Jaeger UI (2.14.1, served by the go-built Jaeger from ci/jaeger/ui.sh's
// assets) in Debian's Chromium, as a person would, while `examples/jaeger.rs` runs slowly
// against it (started by tests/jaeger_ui.rs):
//
//   node tests/browser/jaeger.test.mjs <jaeger-url> <service> <screenshot-dir>
//
// Checks, in order:
//  1. while the run goes on: the service can be picked in the search form, "Find Traces" finds
//     its trace, and the trace holds a `progress.heartbeat` span (status running, the active
//     path) but not yet its root `process_setlist`            -> running.png
//  2. once it ended: the search lists "<service>: process_setlist" with its error count
//                                                              -> search.png
//  3. the trace: setlist → 3 songs → actions → blocks → encode → the child process's
//     `encode_stems`, all of the one service, in one trace; the failed block, its action and
//     its song carry the error icon, the setlist does not      -> trace.png
//  4. the failed block's details: the `tracing_progress.*` tags, `error.type`, error status,
//     the `exception` log with the message, and `progress` logs -> failed-span.png
//  5. no JavaScript error on any page.
//
// Exit code 0 when every check passed, 1 otherwise. Chromium comes from the system
// (`CHROMIUM` or /usr/bin/chromium), never downloaded.

import { join } from "node:path";
import { check, log, openBrowser, sleep } from "./driver.mjs";

const [base, service, shotDir] = process.argv.slice(2);
if (!base || !service || !shotDir) {
  console.error("usage: node jaeger.test.mjs <jaeger-url> <service> <screenshot-dir>");
  process.exit(2);
}
const url = base.replace(/\/$/, "");
const OVERALL_MS = 150_000;

async function shot(page, name) {
  const path = join(shotDir, `${name}.png`);
  await page.screenshot({ path });
  log(`screenshot ${path}`);
}

const { context, finish } = await openBrowser({
  overallMs: OVERALL_MS,
  shotDir,
  viewport: { width: 1280, height: 860 },
});

const jsErrors = [];
let error = null;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => jsErrors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") jsErrors.push(`console.error: ${m.text()}`);
  });
  page.setDefaultTimeout(15_000);

  // ---- the search form: pick the service, find its traces ----------------------------------
  // The service list is loaded with the page: reload until our service is in it.
  async function pickService() {
    for (let i = 0; ; i++) {
      await page.goto(`${url}/search`);
      const select = page.locator('div[name="service"]');
      await select.waitFor();
      await select.click();
      await page.locator('div[name="service"] input').fill(service);
      const option = page.locator(`.ant-select-item-option[title="${service}"]`);
      try {
        await option.waitFor({ timeout: 1_500 });
        await option.click();
        return;
      } catch (e) {
        if (i >= 40) throw new Error(`service ${service} never appeared in the search form`);
        await sleep(500);
      }
    }
  }
  async function findTraces() {
    await page.getByRole("button", { name: "Find Traces" }).click();
    await page
      .locator(".ResultItem, .SearchResults--noResults, .ant-alert, .ub-flex.ub-justify-center")
      .first()
      .waitFor()
      .catch(() => {});
    await sleep(300);
    return page.locator(".ResultItem");
  }
  // The rows of the open trace: service, operation, depth in the tree, error icon.
  async function traceRows() {
    await page.locator(".span-row").first().waitFor();
    return page.evaluate(() =>
      [...document.querySelectorAll(".span-row")].map((r) => ({
        service: (r.querySelector(".span-svc-name")?.textContent ?? "").trim(),
        op: (r.querySelector(".endpoint-name")?.textContent ?? "").trim(),
        depth: r.querySelectorAll(".SpanTreeOffset--indentGuide").length,
        error: r.querySelector(".SpanBarRow--errorIcon") !== null,
      })),
    );
  }
  const rowOf = (op, opts = {}) =>
    page
      .locator(".span-row")
      .filter({ has: page.locator(".endpoint-name", { hasText: new RegExp(`^${op.replace(".", "\\.")}$`) }) })
      .filter(opts.error ? { has: page.locator(".SpanBarRow--errorIcon") } : {});
  // Opens a span's details and its tags table; returns the detail row.
  async function openDetails(row) {
    await row.locator(".span-name").click();
    const detail = page.locator(".detail-row").first();
    await detail.waitFor();
    await detail.locator(".AccordianKeyValues--header", { hasText: "Tags:" }).first().click();
    await detail.locator("table").first().waitFor();
    return detail;
  }
  // The tags table of an open detail row as {key: value}.
  const tagsOf = (detail) =>
    detail.locator("table").first().evaluate((t) =>
      Object.fromEntries(
        [...t.querySelectorAll("tr")].map((tr) => {
          const cells = tr.querySelectorAll("td");
          // The value cell also holds the (hidden) copy buttons: leave them out.
          const value = cells[1]?.cloneNode(true);
          value?.querySelectorAll("button, [class*=copy i]").forEach((e) => e.remove());
          return [(cells[0]?.textContent ?? "").trim(), (value?.textContent ?? "").trim()];
        }),
      ),
    );

  // ---- 1. while it runs: found, with a heartbeat and without its root ---------------------
  await pickService();
  log(`ok: service ${service} is in the search form`);
  let running = null;
  for (let i = 0; i < 60 && !running; i++) {
    const results = await findTraces();
    if ((await results.count()) > 0) {
      const title = (await results.first().locator(".ResultItemTitle--title").textContent()) ?? "";
      check(!title.includes("process_setlist"), `a trace is listed while the run goes on: "${title.trim()}"`);
      await results.first().locator("a.ResultItemTitle--item").click();
      const rows = await traceRows();
      if (rows.some((r) => r.op === "progress.heartbeat")) {
        running = rows;
        break;
      }
      log(`no heartbeat in the trace yet (${rows.length} spans); searching again`);
      await page.goBack();
    }
    await sleep(1_000);
  }
  check(running !== null, "the running trace shows a progress.heartbeat span");
  check(!running.some((r) => r.op === "process_setlist"), "its root process_setlist has not arrived: it is still running");
  const hbDetail = await openDetails(rowOf("progress.heartbeat").first());
  const hbTags = await tagsOf(hbDetail);
  check(hbTags["tracing_progress.status"] === "running", `the heartbeat says status running (tags: ${JSON.stringify(hbTags)})`);
  check(
    (hbTags["tracing_progress.active_path"] ?? "").startsWith('setlist "My Setlist"'),
    `the heartbeat carries the active path: ${hbTags["tracing_progress.active_path"]}`,
  );
  check(hbTags["tracing_progress.total"] === "3", "and the setlist's total (3 songs)");
  await shot(page, "running");

  // ---- 2. after the end: the search lists the whole run -----------------------------------
  let item = null;
  for (let i = 0; i < 60; i++) {
    await page.goto(`${url}/search`);
    await pickService();
    const results = await findTraces();
    const n = await results.count();
    if (n > 0) {
      const title = (await results.first().locator(".ResultItemTitle--title").textContent()) ?? "";
      if (title.includes("process_setlist")) {
        check(n === 1, `exactly one trace for ${service}`);
        item = results.first();
        break;
      }
    }
    await sleep(1_000);
  }
  check(item !== null, `the search lists "${service}: process_setlist" once the run ended`);
  const itemText = (await item.textContent()) ?? "";
  check(/3 Errors?/.test(itemText), `the result shows the trace's error count: ${JSON.stringify(itemText.match(/\d+ Errors?/)?.[0])}`);
  await shot(page, "search");

  // ---- 3. the trace: the tree, one service, the child process, the error icons -------------
  await item.locator("a.ResultItemTitle--item").click();
  const rows = await traceRows();
  const header = (await page.locator(".TracePageHeader--titleRow").textContent()) ?? "";
  check(header.includes(`${service}: process_setlist`), "the trace page is titled by its root");
  const d = rows[0].depth;
  const at = (op) => rows.filter((r) => r.op === op);
  check(rows[0].op === "process_setlist", "the setlist is the root (first row)");
  check(at("process_song").length === 3 && at("process_song").every((r) => r.depth === d + 1), "three songs under the setlist");
  check(at("execute_action").length > 0 && at("execute_action").every((r) => r.depth === d + 2), `${at("execute_action").length} actions under the songs`);
  check(at("run_block").length > 0 && at("run_block").every((r) => r.depth === d + 3), `${at("run_block").length} blocks under the actions`);
  check(at("encode").length === 2 && at("encode").every((r) => r.depth === d + 4), "two encode steps under their blocks");
  check(
    at("encode_stems").length === 2 && at("encode_stems").every((r) => r.depth === d + 5),
    "the child process's encode_stems spans sit under encode, in the same trace",
  );
  // Each encode_stems row follows its encode row: the child continued that very span.
  rows.forEach((r, i) => {
    if (r.op === "encode_stems") check(rows[i - 1].op === "encode", "encode_stems directly under its encode");
  });
  check(rows.every((r) => r.service === service), `every span is of service ${service}`);
  const errors = rows.filter((r) => r.error).map((r) => r.op).sort();
  check(
    JSON.stringify(errors) === JSON.stringify(["execute_action", "process_song", "run_block"]),
    `error icons on the failed block, its action and its song only: ${errors.join(", ")}`,
  );
  check(!rows[0].error, "the setlist, which carried on, is not marked as an error");
  check(at("progress.heartbeat").every((r) => r.depth === d + 1), `${at("progress.heartbeat").length} heartbeat(s) under the root`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, "trace");

  // ---- 4. the failed block: tags, exception log, progress logs ------------------------------
  const failedRow = rowOf("run_block", { error: true });
  check((await failedRow.count()) === 1, "one failed run_block row");
  const detail = await openDetails(failedRow);
  const tags = await tagsOf(detail);
  const want = {
    "tracing_progress.status": "failed",
    "tracing_progress.level": "block",
    "tracing_progress.name": "DetectOnsets2",
    "tracing_progress.current": "60",
    "tracing_progress.total": "100",
    "error.type": "tracing_progress::event",
    "otel.status_code": "ERROR",
    error: "true",
  };
  for (const [k, v] of Object.entries(want)) {
    check(tags[k] === v, `tag ${k} = ${v} (got ${JSON.stringify(tags[k])})`);
  }
  check(
    (tags["otel.status_description"] ?? "").includes("onset detector diverged"),
    `the status description is the error: ${tags["otel.status_description"]}`,
  );
  for (const k of ["tracing_progress.operation_id", "tracing_progress.node_id", "tracing_progress.duration_ms", "tracing_progress.eta_at_close_s"]) {
    check(k in tags, `tag ${k} is shown (${tags[k]})`);
  }
  const logs = detail.locator(".AccordianLogs");
  await logs.waitFor();
  const logsHeader = (await logs.locator(".AccordianLogs--header").textContent()) ?? "";
  if (!(await logs.locator(".AccordianLogs--header.is-open").count())) {
    await logs.locator(".AccordianLogs--header").click();
  }
  // Three logs are shown, then "show more...".
  const more = logs.getByText("show more...");
  if (await more.count()) await more.click();
  // Our exception event: open it to see all its fields.
  const exceptionLog = logs
    .locator(".AccordianKeyValues--header")
    .filter({ hasText: "tracing_progress.path" })
    .first();
  await exceptionLog.click();
  const logsText = (await logs.textContent()) ?? "";
  check(/Logs \(\d+\)/.test(logsHeader), `the span has logs: ${logsHeader.trim()}`);
  check(
    logsText.includes("exception") && logsText.includes("exception.message") && logsText.includes("onset detector diverged"),
    "an exception log with exception.message",
  );
  check(logsText.includes("exception.type") && logsText.includes("tracing_progress::event"), "with exception.type");
  check(logsText.includes("event=progress") || /event\s*=\s*progress/.test(logsText) || logsText.includes("progress"), "progress logs");
  check(logsText.includes("tracing_progress.current"), "progress logs carry tracing_progress.current");
  // The details as a person reads them, tags and logs, in a window tall enough for all of
  // them (the trace view scrolls inside the page, under a sticky header).
  await page.setViewportSize({ width: 1280, height: 2400 });
  await sleep(300);
  await detail.scrollIntoViewIfNeeded();
  await sleep(300);
  const path = join(shotDir, "failed-span.png");
  await detail.locator(".detail-info-wrapper").screenshot({ path });
  log(`screenshot ${path}`);
  await page.setViewportSize({ width: 1280, height: 860 });

  // ---- 5. no JavaScript errors ------------------------------------------------------------------
  check(jsErrors.length === 0, `no page JavaScript errors${jsErrors.length ? ": " + jsErrors.join("; ") : ""}`);
} catch (e) {
  error = e;
}
await finish("Jaeger UI test", error, jsErrors);
