// Drives one page of drivers/web in headless Chromium (the machine's, through playwright-core;
// no browser is downloaded) and prints the page's COMPAT-RESULT line.
//   CHROMIUM=/usr/bin/chromium node browser.mjs PAGE_URL
import { chromium } from 'playwright-core';
import { TURN_MS } from '../turn.mjs';

const [pageUrl] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'], // root in CI and containers
});
let line;
let finished = true;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`.slice(0, 300)));
  page.on('pageerror', (e) => console.error(`[page error] ${e.message}`.slice(0, 300)));
  await page.goto(pageUrl);
  try {
    await page.waitForFunction(() => window.__compat?.finished, null, { timeout: TURN_MS });
  } catch {
    finished = false;
  }
  line = await page.evaluate(() => window.__compat?.line());
  if (line && !finished) {
    const result = JSON.parse(line.slice('COMPAT-RESULT '.length));
    result.notes.push(`the page did not finish within ${TURN_MS / 1000} s`);
    line = 'COMPAT-RESULT ' + JSON.stringify(result);
  }
} finally {
  await browser.close();
}
console.log(line ?? 'COMPAT-RESULT {"audio_bytes":0,"errors":["the page never ran (see its console above)"],"notes":[]}');
