import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { harness } from '../helpers/harness';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

describe('GET /docs in a browser', function () {
  this.timeout(90_000);
  let browser: Browser | undefined;

  before(async () => {
    // Fails rather than skips: CI installs it (.ci/run), and a skipped check proves nothing.
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  });

  after(async () => {
    await browser?.close();
  });

  it('lists every operation of swagger.yml, loading nothing from another host', async () => {
    const { client, web } = harness().app;
    const base = `http://127.0.0.1:${client.port}`;
    const page = await (browser as Browser).newPage({ viewport: { width: 1280, height: 2400 } });
    const requested: string[] = [];
    page.on('request', (r) => requested.push(r.url()));
    const failed: string[] = [];
    page.on('requestfailed', (r) => failed.push(r.url()));

    const res = await page.goto(`${base}/docs`);
    assert.equal(res?.status(), 200);
    await page.waitForSelector('.opblock', { timeout: 30_000 });

    const shown = await page.$$eval('.opblock', (blocks) =>
      blocks.map((b) => {
        const method = b.querySelector('.opblock-summary-method')?.textContent?.trim().toLowerCase() ?? '';
        const p = b.querySelector('.opblock-summary-path')?.getAttribute('data-path') ?? b.querySelector('.opblock-summary-path')?.textContent ?? '';
        return `${method} ${p.replace(/\u200b/g, '').trim()}`;
      }),
    );
    const expected: string[] = [];
    for (const [p, item] of Object.entries(web.api.definition.paths ?? {})) {
      for (const m of ['get', 'post', 'put', 'patch', 'delete']) if (item && m in item) expected.push(`${m} ${p}`);
    }
    assert.ok(expected.length >= 10);
    assert.deepEqual([...shown].sort(), [...expected].sort());
    assert.match(await page.title(), /Messenger API/);
    assert.ok(requested.includes(`${base}/swagger.yml`), 'the page loaded /swagger.yml');
    assert.deepEqual(requested.filter((u) => !u.startsWith(`${base}/`) && !u.startsWith('data:')), [], 'loaded from another host');
    assert.deepEqual(failed, []);

    const shot = path.join(os.tmpdir(), 'messenger-docs.png');
    await page.screenshot({ path: shot, fullPage: false });
    assert.ok(fs.statSync(shot).size > 10_000);
    await page.close();
  });
});
