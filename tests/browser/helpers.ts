/// <reference lib="dom" />
// Shared by the browser tests of the web client: launching Debian's Chromium
// through playwright-core, and the few steps every test takes in the page.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

export const ROOT = path.resolve(__dirname, '../..');
export const CHROMIUM = '/usr/bin/chromium';
export const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
export const SHOTS = path.join(ROOT, 'reports', 'screenshots');
export const PASSWORD = 'correct horse battery';

/** Chromium, after checking it and the built client are there; fails (never skips) when either is missing. */
export async function launchBrowser(): Promise<Browser> {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  assert.ok(
    fs.existsSync(path.join(ROOT, 'dist/web/index.html')),
    'dist/web is not built: run `npm run build:web` (npm run test:browser does it first)',
  );
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS });
}

/** What a page reported that should never happen: CSP violations, script errors. */
export function watchProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  return problems;
}

export async function signUp(page: Page, name: string): Promise<void> {
  await page.getByRole('tab', { name: 'Sign up' }).click();
  await page.getByLabel('Name').fill(name);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.locator('.me', { hasText: name }).waitFor();
}

export async function logIn(page: Page, name: string): Promise<void> {
  await page.getByLabel('Name').fill(name);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('.me', { hasText: name }).waitFor();
}

/** Types `text` into the composer and sends it with Enter. */
export async function send(page: Page, text: string): Promise<void> {
  await page.locator('#composer-text').fill(text);
  await page.locator('#composer-text').press('Enter');
}

/** Texts of the stored (not pending) messages on screen. */
export function shown(page: Page): Promise<string[]> {
  return page.$$eval('.messages .msg:not(.pending) .text', (els) => els.map((e) => e.textContent ?? ''));
}

/** Polls `test` every 150 ms; fails with `what` after `ms`. */
export async function until(what: string, test: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await test()) return;
    await new Promise((r) => setTimeout(r, 150));
  }
  assert.fail(`timed out: ${what}`);
}

/** Waits until the page's WebSocket is connected (the connection indicator says live). */
export async function live(page: Page): Promise<void> {
  await page.locator('.conn.live').waitFor({ timeout: 10_000 });
}

/** The chat id in the page's `#/chat/<id>` route. */
export function chatIdOf(page: Page): string {
  const id = /#\/chat\/([0-9a-f]{32})$/.exec(page.url())?.[1];
  assert.ok(id, `not on a chat: ${page.url()}`);
  return id;
}

/** A TCP relay to a server, on a port of its own: the page is opened through it, and the test takes the server away and back. */
export interface Relay {
  readonly port: number;
  /** The server goes away: open connections (the WebSocket too) are cut, new ones are refused. */
  stop(): Promise<void>;
  /** The server is back, on the same port (same origin for the page). */
  start(): Promise<void>;
}

export async function relay(targetPort: number): Promise<Relay> {
  const open = new Set<net.Socket>();
  let server: net.Server | undefined;
  let port = 0;
  async function start(): Promise<void> {
    const s = net.createServer((client) => {
      const upstream = net.connect(targetPort, '127.0.0.1');
      open.add(client);
      open.add(upstream);
      const end = (): void => {
        client.destroy();
        upstream.destroy();
        open.delete(client);
        open.delete(upstream);
      };
      for (const sock of [client, upstream]) {
        sock.on('error', end);
        sock.on('close', end);
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => resolve());
    });
    port = (s.address() as AddressInfo).port;
    server = s;
  }
  await start();
  return {
    get port() {
      return port;
    },
    async stop() {
      const s = server;
      server = undefined;
      for (const sock of open) sock.destroy();
      open.clear();
      if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
    },
    start,
  };
}
