// Opens each page URL given as JSON on stdin ([{url, out, w, h}]) in headless Debian chromium (playwright-core),
// waits for window.result, screenshots the page's w x h corner to `out`, prints one JSON line per page.
import { chromium } from "playwright-core";

const jobs = JSON.parse(await new Promise((resolve) => {
  let text = ""; process.stdin.on("data", (d) => (text += d)); process.stdin.on("end", () => resolve(text));
}));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"],
});
for (const job of jobs) {
  // a context of its own per page: no HTTP cache shared between loads of one file
  const context = await browser.newContext({ viewport: { width: job.w, height: job.h }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(m.text()));
  page.on("pageerror", (e) => logs.push(String(e)));
  const t0 = Date.now();
  let result;
  try {
    await page.goto(job.url);
    await page.waitForFunction(() => window.result !== undefined, null, { timeout: job.timeout_ms || 180000 });
    result = await page.evaluate(() => window.result);
    await page.screenshot({ path: job.out, clip: { x: 0, y: 0, width: job.w, height: job.h } });
  } catch (e) {
    result = { error: String(e).split("\n")[0] };
  }
  console.log(JSON.stringify({ out: job.out, seconds: (Date.now() - t0) / 1000, ...result, logs: logs.slice(-5) }));
  await context.close();
}
await browser.close();
