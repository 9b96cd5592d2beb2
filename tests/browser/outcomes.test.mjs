// Drives the page in Debian's Chromium against a server that holds two finished operations
// (started by tests/browser_outcomes.rs): one completed, one completed with a failed song.
//
//   node tests/browser/outcomes.test.mjs <url> <completed-id> <with-failures-id> <screenshot-dir>
//
// Checks that the run with failures is visibly different from the clean one in the history
// table and on its card: badge "completed with failures", the bar in the partial colour and
// short of 100 %, the counts saying what failed. Screenshot: <screenshot-dir>/outcomes.png.

import { join } from "node:path";
import { check, log, openBrowser, sleep } from "./driver.mjs";

const [url, cleanId, partialId, shotDir] = process.argv.slice(2);
if (!url || !cleanId || !partialId || !shotDir) {
  console.error("usage: node outcomes.test.mjs <url> <completed-id> <with-failures-id> <screenshot-dir>");
  process.exit(2);
}
const { context, finish } = await openBrowser({
  overallMs: 60_000,
  shotDir,
  viewport: { width: 1280, height: 900 },
});
const jsErrors = [];
let error = null;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => jsErrors.push(e.message));
  page.setDefaultTimeout(15_000);
  const T = (id) => `[data-testid="${id}"]`;
  await page.goto(url);
  await page.locator(`${T("connection-status")}[data-state="live"]`).waitFor();
  await page.locator(T("history-tab")).click();

  const row = (id) => page.locator(`${T("history-row")}[data-op-id="${id}"]`);
  await row(partialId).waitFor();
  await row(cleanId).waitFor();
  const badgeText = async (id) => (await row(id).locator(T("status")).textContent()) ?? "";
  check(
    (await row(cleanId).getAttribute("data-status")) === "completed" && (await badgeText(cleanId)) === "completed",
    "the clean run's history row says completed",
  );
  check(
    (await row(partialId).getAttribute("data-status")) === "with_failures" &&
      (await badgeText(partialId)) === "completed with failures",
    `the run with a failed song says "completed with failures" in the history table`,
  );
  const colour = async (id) =>
    row(id).locator(T("status")).evaluate((el) => getComputedStyle(el).backgroundColor);
  const [clean, partial] = [await colour(cleanId), await colour(partialId)];
  check(clean !== partial, `its badge has another colour (${partial} vs ${clean})`);

  // Its card (opened from the row) says the same, and its bar is not a full green 100 %.
  await row(partialId).click();
  const card = page.locator(`${T("history-detail")} ${T("operation-card")}[data-op-id="${partialId}"]`);
  await card.waitFor();
  check((await card.getAttribute("data-status")) === "with_failures", "its card is marked with_failures");
  check(
    ((await card.locator(`.card-head ${T("status")}`).textContent()) ?? "") === "completed with failures",
    "its card's badge says completed with failures",
  );
  const bar = card.locator(T("progress-bar")).first();
  const now = Number(await bar.getAttribute("aria-valuenow"));
  check((await bar.getAttribute("data-status")) === "with_failures", "its bar is drawn as partial");
  check(now < 100, `its bar stops short of 100 % (${now} %, one of three songs failed)`);
  const rootBar = card.locator(`${T("node-row")} ${T("node-bar")}`).first();
  check((await rootBar.getAttribute("data-status")) === "with_failures", "the root row's bar is drawn as partial too");
  const text = (await card.textContent()) ?? "";
  check(text.includes("1 failed"), "its counts say one failed");

  await row(cleanId).click();
  const cleanCard = page.locator(`${T("history-detail")} ${T("operation-card")}[data-op-id="${cleanId}"]`);
  await cleanCard.waitFor();
  check(
    Number(await cleanCard.locator(T("progress-bar")).first().getAttribute("aria-valuenow")) === 100,
    "the clean run's bar is at 100 %",
  );
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shotDir, "outcomes.png"), fullPage: true });
  check(jsErrors.length === 0, `no page JavaScript errors${jsErrors.length ? ": " + jsErrors.join("; ") : ""}`);
} catch (e) {
  error = e;
}
await finish("outcomes test", error, jsErrors);
