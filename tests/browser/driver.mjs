// What every browser check script here shares: a bounded run, logging and checks, Debian's
// Chromium with a fresh profile and no network, and the end of the run (failure screenshot,
// clean-up, exit code). Chromium comes from the system (`CHROMIUM` or /usr/bin/chromium),
// never downloaded: playwright-core has no browser of its own.

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const started = Date.now();

/** A line on stdout, timed from the start of the run. */
export function log(msg) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${msg}`);
}

/** Throws (ending the run as failed) unless `cond`; logs the check otherwise. */
export function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
  log(`ok: ${msg}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts Chromium for a run bounded by `overallMs` (the process exits with 1 past it), its
 * screenshots going to `shotDir`. Returns the browser context and `finish`, which ends the
 * run: `await finish(label, error, jsErrors)` prints the error and the page's JavaScript
 * errors, takes `failure.png` of the first page if the run failed, closes the browser,
 * removes its profile and exits 0 or 1.
 */
export async function openBrowser({ overallMs, shotDir, viewport, colorScheme = "light" }) {
  const watchdog = setTimeout(() => {
    console.error(`FAIL: timed out after ${overallMs / 1000} s`);
    process.exit(1);
  }, overallMs);
  const profile = mkdtempSync(join(tmpdir(), "tracing-progress-chromium-"));
  mkdirSync(shotDir, { recursive: true });
  // A fresh profile, and nothing that reaches for the network (this machine has none).
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport,
    colorScheme,
  });
  async function finish(label, error, jsErrors = []) {
    if (error) {
      console.error(`FAIL: ${error && error.stack ? error.stack : error}`);
      if (jsErrors.length) console.error(`page errors: ${jsErrors.join("; ")}`);
      try {
        const page = context.pages()[0];
        if (page) {
          await page.screenshot({ path: join(shotDir, "failure.png"), fullPage: true });
          console.error(`screenshot ${join(shotDir, "failure.png")}`);
        }
      } catch {
        // best effort
      }
    }
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
    clearTimeout(watchdog);
    console.log(error ? `${label}: FAILED` : `${label}: all checks passed`);
    process.exit(error ? 1 : 0);
  }
  return { context, finish };
}
