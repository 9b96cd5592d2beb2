// Draws a terminal screen captured with colours (`tmux capture-pane -p -e`) as a PNG, in
// Debian's Chromium through playwright-core: used by docs/pictures.sh for the README's picture
// of the live terminal view.
//
//   node tests/browser/terminal-picture.mjs <capture.txt> <out.png> [title]
//
// Understands the SGR escapes tmux writes (reset, bold, dim, italic, underline, inverse,
// 8/16/256/true colours); anything else is dropped.

import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [input, output, title = ""] = process.argv.slice(2);
if (!input || !output) {
  console.error("usage: node terminal-picture.mjs <capture.txt> <out.png> [title]");
  process.exit(2);
}

// xterm's default palette (the 16 colours), then the 256-colour cube and greys.
const BASE = [
  "#000000", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
  "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff",
];
function color256(n) {
  if (n < 16) return BASE[n];
  if (n < 232) {
    const v = [0, 95, 135, 175, 215, 255];
    const i = n - 16;
    return `rgb(${v[Math.floor(i / 36)]},${v[Math.floor(i / 6) % 6]},${v[i % 6]})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g},${g},${g})`;
}
const esc = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function toHtml(text) {
  let st = {};
  let out = "";
  let open = false;
  const style = () => {
    let fg = st.fg, bg = st.bg;
    if (st.inverse) [fg, bg] = [bg ?? "#1e1e1e", fg ?? "#d4d4d4"];
    const css = [];
    if (fg) css.push(`color:${fg}`);
    if (bg) css.push(`background:${bg}`);
    if (st.bold) css.push("font-weight:bold");
    if (st.dim) css.push("opacity:.65");
    if (st.italic) css.push("font-style:italic");
    if (st.underline) css.push("text-decoration:underline");
    return css.join(";");
  };
  const parts = text.split(/(\x1b\[[0-9;:]*[A-Za-z])/);
  for (const part of parts) {
    const m = /^\x1b\[([0-9;:]*)([A-Za-z])$/.exec(part);
    if (!m) {
      out += esc(part.replace(/\x1b[^a-zA-Z]*[a-zA-Z]?/g, ""));
      continue;
    }
    if (m[2] !== "m") continue;
    const codes = m[1] === "" ? [0] : m[1].split(/[;:]/).map(Number);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) st = {};
      else if (c === 1) st.bold = true;
      else if (c === 2) st.dim = true;
      else if (c === 3) st.italic = true;
      else if (c === 4) st.underline = true;
      else if (c === 7) st.inverse = true;
      else if (c === 22) st.bold = st.dim = false;
      else if (c === 23) st.italic = false;
      else if (c === 24) st.underline = false;
      else if (c === 27) st.inverse = false;
      else if (c >= 30 && c <= 37) st.fg = BASE[c - 30];
      else if (c >= 90 && c <= 97) st.fg = BASE[c - 90 + 8];
      else if (c >= 40 && c <= 47) st.bg = BASE[c - 40];
      else if (c >= 100 && c <= 107) st.bg = BASE[c - 100 + 8];
      else if (c === 39) st.fg = undefined;
      else if (c === 49) st.bg = undefined;
      else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
        st[c === 38 ? "fg" : "bg"] = color256(codes[i + 2]);
        i += 2;
      } else if ((c === 38 || c === 48) && codes[i + 1] === 2) {
        st[c === 38 ? "fg" : "bg"] = `rgb(${codes[i + 2]},${codes[i + 3]},${codes[i + 4]})`;
        i += 4;
      }
    }
    if (open) out += "</span>";
    out += `<span style="${style()}">`;
    open = true;
  }
  if (open) out += "</span>";
  return out;
}

const text = readFileSync(input, "utf8").replace(/\s+$/, "");
const html = `<!doctype html><meta charset="utf-8"><style>
  body { margin: 0; background: #f3f3f3; }
  .win { display: inline-block; margin: 12px; border-radius: 8px; overflow: hidden;
         box-shadow: 0 2px 8px rgba(0,0,0,.25); background: #1e1e1e; }
  .bar { background: #3c3c3c; color: #ccc; font: 12px sans-serif; padding: 6px 12px; }
  pre { margin: 0; padding: 10px 14px; color: #d4d4d4;
        font: 13px/1.3 "DejaVu Sans Mono", "Liberation Mono", monospace; }
</style><div class="win"><div class="bar">${esc(title)}</div><pre>${toHtml(text)}</pre></div>`;

const profile = mkdtempSync(join(tmpdir(), "tracing-progress-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1200, height: 800 },
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.setContent(html);
  await page.locator(".win").screenshot({ path: output });
  console.log(`wrote ${output}`);
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
