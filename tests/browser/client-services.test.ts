/// <reference lib="dom" />
// The web client on a services-mode stack of two web processes (issue 16):
// two browser contexts as two accounts, Alice on process 1 and Bob on
// process 2, both `messenger/main.ts` run as real processes on the run's
// PostgreSQL database, Redis prefix and RabbitMQ queue. Everything one sees
// of the other (messages, unread counts, presence, the end of a session)
// crosses from one process to the other through Redis.
//
// Registered only when TEST_MODE=services (like tests/*-services.test.ts):
// .ci/run checks that the services-mode browser run ran at least the
// embedded browser run's tests plus `browser_services_only` of
// .ci/test-floor.json, so these tests cannot silently go missing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { MODE, testEnv } from '../helpers/env';
import { uniq } from '../helpers/factories';
import { freePort, ServiceProcess } from '../helpers/process';
import { chatIdOf, launchBrowser, live, logIn, PASSWORD, send, SHOTS, shown, signUp, until, watchProblems } from './helpers';

/** One web process of the stack. */
interface Web {
  proc: ServiceProcess;
  port: number;
  base: string;
}

async function startWeb(): Promise<Web> {
  const port = await freePort();
  // Every app on (a newcomer's stack); LOG_LEVEL info for the "listening" line.
  const proc = new ServiceProcess('messenger/main.ts', testEnv({ PORT: String(port), LOG_LEVEL: 'info' }));
  await proc.waitFor((l) => l.msg === 'messenger-api listening');
  return { proc, port, base: `http://127.0.0.1:${port}` };
}

/** A page that records the URL of every WebSocket it opens. */
interface Tab {
  page: Page;
  context: BrowserContext;
  sockets: string[];
  problems: string[];
}

if (MODE === 'services') {
  describe('the web client on two web processes of one services-mode stack (services mode)', function () {
    this.timeout(180_000);
    let browser: Browser;
    const procs: ServiceProcess[] = [];
    const contexts: BrowserContext[] = [];
    let one: Web;
    let two: Web;
    let alice: Tab;
    let bob: Tab;
    const aliceName = uniq('alice');
    const bobName = uniq('bob');
    let chatId = '';

    before(async () => {
      browser = await launchBrowser();
      fs.mkdirSync(SHOTS, { recursive: true });
      const started = await Promise.allSettled([startWeb(), startWeb()]);
      for (const s of started) if (s.status === 'fulfilled') procs.push(s.value.proc);
      for (const s of started) if (s.status === 'rejected') throw s.reason;
      [one, two] = started.map((s) => (s as PromiseFulfilledResult<Web>).value);
    });

    after(async () => {
      for (const c of contexts) await c.close();
      await browser?.close();
      for (const p of procs) {
        p.kill();
        await p.exited;
      }
    });

    async function tab(width = 1280, height = 800): Promise<Tab> {
      const context = await browser.newContext({ viewport: { width, height } });
      contexts.push(context);
      const page = await context.newPage();
      const sockets: string[] = [];
      page.on('websocket', (ws) => sockets.push(ws.url()));
      return { page, context, sockets, problems: watchProblems(page) };
    }

    /** Every WebSocket the tab opened went to `web`'s port (and there was at least one). */
    function socketsOn(t: Tab, web: Web): void {
      assert.ok(t.sockets.length > 0, 'no WebSocket opened');
      for (const url of t.sockets) assert.equal(new URL(url).port, String(web.port), `${url} is not on process ${web.port}`);
    }

    const sessions = new Map<string, string>();
    /** The account's unread count in the direct chat, as `web` answers GET /v1/chats (a session of its own). */
    async function unreadOf(web: Web, name: string): Promise<number> {
      let session = sessions.get(name);
      if (session === undefined) {
        const res = await fetch(`${web.base}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user_name: name, password: PASSWORD }) });
        assert.equal(res.status, 201);
        session = ((await res.json()) as { session_id: string }).session_id;
        sessions.set(name, session);
      }
      const res = await fetch(`${web.base}/v1/chats`, { headers: { authorization: `session_id ${session}` } });
      assert.equal(res.status, 200);
      const chat = ((await res.json()) as { chats: { chat_id: string; unread: number }[] }).chats.find((c) => c.chat_id === chatId);
      assert.ok(chat, 'the direct chat is not on the list');
      return chat.unread;
    }

    function needsChat(): void {
      assert.ok(chatId !== '', 'needs the direct chat of the first test');
    }

    it('Alice on process 1 and Bob on process 2: sign up, direct chat by people search, messages both ways live, unread badge appears and clears, presence dot', async () => {
      alice = await tab();
      bob = await tab();
      await bob.page.goto(`${two.base}/`);
      await signUp(bob.page, bobName);
      await alice.page.goto(`${one.base}/`);
      await signUp(alice.page, aliceName);
      await live(alice.page);
      await live(bob.page);

      // Bob's account was made on process 2; Alice finds it through process 1.
      await alice.page.getByRole('button', { name: 'People' }).click();
      await alice.page.getByLabel(/Find someone/).fill(bobName.slice(0, 8));
      await alice.page.getByRole('button', { name: `Message ${bobName}` }).click();
      await alice.page.waitForURL(/#\/chat\/[0-9a-f]{32}$/);
      chatId = chatIdOf(alice.page);

      // Bob is on his chat list: the chat appears live, with an unread badge and Alice's online dot.
      await send(alice.page, 'hi bob, from process 1');
      const item = bob.page.locator(`.chat-item[data-chat="${chatId}"]`);
      await item.waitFor({ timeout: 10_000 });
      await until('unread badge 1 at bob', async () => (await item.locator('.badge').textContent().catch(() => '')) === '1');
      await until('online dot for alice at bob', async () => (await item.locator('.dot').count()) === 1);

      // Opening the chat reads it: the divider marks the new message, the badge clears.
      await item.click();
      await until('message shown to bob', async () => (await shown(bob.page)).includes('hi bob, from process 1'));
      await bob.page.locator('.divider').waitFor();
      await until('badge cleared at bob', async () => (await item.locator('.badge').count()) === 0);

      // Live both ways, each within 3 s, between sockets on different processes.
      let started = Date.now();
      await send(bob.page, 'hello alice, from process 2');
      await until('live to alice', async () => (await shown(alice.page)).includes('hello alice, from process 2'), 3_000);
      assert.ok(Date.now() - started < 3_000);
      started = Date.now();
      await send(alice.page, 'and back to process 2');
      await until('live to bob', async () => (await shown(bob.page)).includes('and back to process 2'), 3_000);
      assert.ok(Date.now() - started < 3_000);

      // Alice's unread count for Bob's reply stays 0: she has the chat open and it is read as it comes.
      const aliceItem = alice.page.locator(`.chat-item[data-chat="${chatId}"]`);
      await aliceItem.waitFor();
      assert.equal(await aliceItem.locator('.badge').count(), 0);
      // Bob is online to Alice (his socket is on the other process), in the list and among the members.
      await until('online dot for bob at alice', async () => (await aliceItem.locator('.dot').count()) === 1);
      await alice.page.getByRole('button', { name: /Members/ }).click();
      await until('both members online at alice', async () => (await alice.page.locator('.members .dot:not(.off)').count()) === 2);
      // Nobody else can join a direct chat, so it offers no invitation link.
      assert.equal(await alice.page.getByLabel('Invitation link').count(), 0);

      socketsOn(alice, one);
      socketsOn(bob, two);
      for (const t of [alice, bob]) {
        const texts = await shown(t.page);
        for (const m of ['hi bob, from process 1', 'hello alice, from process 2', 'and back to process 2']) {
          assert.equal(texts.filter((x) => x === m).length, 1, `${m} once`);
        }
      }
      assert.deepEqual([...alice.problems, ...bob.problems], []);
    });

    it('a reload keeps the session on each process, and the chat stays live after it', async () => {
      needsChat();
      // The read markers the pages moved are stored (asked of the other process than each page's).
      await until('bob read everything', async () => (await unreadOf(one, bobName)) === 0);
      await until('alice read everything', async () => (await unreadOf(two, aliceName)) === 0);
      for (const t of [alice, bob]) {
        assert.equal(await t.page.evaluate(() => Object.values(sessionStorage).concat(Object.values(localStorage)).some((v) => /^[0-9a-f]{32}$/.test(v))), false, 'no session id stored');
      }
      await bob.page.reload();
      await bob.page.locator('.me', { hasText: bobName }).waitFor();
      await alice.page.reload();
      await alice.page.locator('.me', { hasText: aliceName }).waitFor();
      await live(alice.page);
      await live(bob.page);
      assert.equal(chatIdOf(bob.page), chatId);
      await until('history after reload', async () => (await shown(bob.page)).includes('and back to process 2'));
      // Bob read everything as it came into view before the reload: no badge, no divider.
      const item = bob.page.locator(`.chat-item[data-chat="${chatId}"]`);
      await item.waitFor();
      assert.equal(await item.locator('.badge').count(), 0);
      assert.equal(await bob.page.locator('.divider').count(), 0);

      await send(bob.page, 'after the reload');
      await until('live to alice after reload', async () => (await shown(alice.page)).includes('after the reload'), 3_000);
      socketsOn(alice, one);
      socketsOn(bob, two);
    });

    it('offline and back: messages sent while Bob is offline arrive exactly once on both sides', async () => {
      needsChat();
      await bob.context.setOffline(true);
      await send(bob.page, 'sent while offline');
      await bob.page.locator('.msg.pending').waitFor();
      // Alice writes while Bob cannot hear: he gets it on his return (resume).
      await send(alice.page, 'written while bob was away');
      await until('stored at alice', async () => (await shown(alice.page)).includes('written while bob was away'));
      await bob.page.waitForTimeout(3_000);
      assert.ok(!(await shown(alice.page)).includes('sent while offline'), 'an offline message got through');
      await bob.context.setOffline(false);

      await until('offline message arrives at alice', async () => (await shown(alice.page)).includes('sent while offline'), 40_000);
      await until('bob sees it stored', async () => (await shown(bob.page)).includes('sent while offline'), 40_000);
      await until('bob gets what he missed', async () => (await shown(bob.page)).includes('written while bob was away'), 40_000);
      await live(bob.page);
      // Give any duplicate (a resent frame, a repeated POST) time to show up.
      await alice.page.waitForTimeout(2_000);
      for (const t of [alice, bob]) {
        const texts = await shown(t.page);
        for (const m of ['sent while offline', 'written while bob was away']) assert.equal(texts.filter((x) => x === m).length, 1, `${m} once`);
      }
      assert.equal(await bob.page.locator('.msg.pending').count(), 0);
      // What Bob missed came into view on his return, so it counts as read.
      await until('bob read what he missed', async () => (await unreadOf(one, bobName)) === 0);
      socketsOn(bob, two);
    });

    it('screenshots of the chat view: desktop and 360 px, light and dark', async () => {
      needsChat();
      const shots: string[] = [];
      const shoot = async (page: Page, name: string) => {
        const file = path.join(SHOTS, `services-chat-${name}.png`);
        await page.screenshot({ path: file });
        shots.push(file);
      };
      // Alice's chat view with the members panel: Bob online, from the other process.
      await alice.page.getByRole('button', { name: /Members/ }).click();
      await until('bob online among the members', async () => (await alice.page.locator('.members .dot:not(.off)').count()) === 2);
      await alice.page.emulateMedia({ colorScheme: 'light' });
      await shoot(alice.page, 'desktop-light');
      await alice.page.emulateMedia({ colorScheme: 'dark' });
      await shoot(alice.page, 'desktop-dark');
      await alice.page.emulateMedia({ colorScheme: null });

      // Bob's tab at 360 px: the chat alone, nothing wider than the screen.
      await bob.page.setViewportSize({ width: 360, height: 740 });
      await bob.page.emulateMedia({ colorScheme: 'light' });
      assert.ok(await bob.page.locator('.chat').isVisible());
      assert.equal(await bob.page.locator('.sidebar').isVisible(), false);
      const width = await bob.page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= 360, `page is ${width}px wide at 360px`);
      await shoot(bob.page, '360-light');
      await bob.page.emulateMedia({ colorScheme: 'dark' });
      assert.equal(await bob.page.evaluate(() => getComputedStyle(document.body).backgroundColor), 'rgb(21, 23, 26)', 'dark theme');
      await shoot(bob.page, '360-dark');
      await bob.page.emulateMedia({ colorScheme: null });
      await bob.page.setViewportSize({ width: 1280, height: 800 });
      for (const f of shots) assert.ok(fs.statSync(f).size > 5_000, f);
    });

    it('log out everywhere on process 1 closes the same account\'s session on process 2; Bob stays signed in', async () => {
      needsChat();
      const again = await tab();
      await again.page.goto(`${two.base}/`);
      await logIn(again.page, aliceName);
      await live(again.page);
      socketsOn(again, two);

      await alice.page.getByRole('button', { name: 'Account' }).click();
      await alice.page.getByRole('button', { name: 'Log out everywhere' }).click();
      await alice.page.getByRole('button', { name: 'Log in' }).waitFor();
      await again.page.getByRole('button', { name: 'Log in' }).waitFor({ timeout: 10_000 });
      assert.equal(await again.page.evaluate(() => sessionStorage.getItem('messenger.refresh')), null, 'refresh token dropped');
      // A reload cannot bring the ended session back.
      await again.page.reload();
      await again.page.getByRole('button', { name: 'Log in' }).waitFor();

      // The other account is untouched: Bob is still signed in and live on process 2.
      await bob.page.waitForTimeout(1_000);
      await bob.page.locator('.me', { hasText: bobName }).waitFor();
      await live(bob.page);
      assert.deepEqual([...alice.problems, ...bob.problems, ...again.problems], []);
    });
  });
}
