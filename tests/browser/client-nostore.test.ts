/// <reference lib="dom" />
// The web client against a server with MESSAGE_STORAGE_TYPE=no_storage: a
// message is delivered live and never stored, so a chat's page is always
// empty. What came while a chat was closed is shown when it is opened (the
// client keeps it), and opening the chat clears its unread badge (reading a
// live message is 200 there). Until 2026-12-07 the chat opened on "No
// messages yet" and the badge never cleared (400 bad-cursor on every read).
import assert from 'node:assert/strict';
import type { Browser, BrowserContext } from 'playwright-core';
import { harness, startApp, type Running } from '../helpers/harness';
import { buildUser } from '../helpers/factories';
import { launchBrowser, live, logIn, shown, until, watchProblems } from './helpers';

describe('the web client, MESSAGE_STORAGE_TYPE=no_storage', function () {
  this.timeout(120_000);
  let browser: Browser;
  let app: Running;
  const contexts: BrowserContext[] = [];

  before(async () => {
    app = await startApp(harness().infra, { MESSAGE_STORAGE_TYPE: 'no_storage' });
    browser = await launchBrowser();
  });

  after(async () => {
    for (const c of contexts) await c.close();
    await browser?.close();
    await app?.close();
  });

  it('messages that came while a chat was closed are shown when it is opened, and its unread badge clears', async () => {
    const { client } = app;
    const alice = await buildUser(client);
    const bob = await buildUser(client);
    const chatId = ((await client.post('/v1/chats', { chat_name: 'live only' }, alice.session).expect(201)).body as { chat_id: string }).chat_id;
    const aliceId = ((await client.post(`/v1/chats/${chatId}/users`, { user_name: 'Alice' }, alice.session).expect(201)).body as { user_id: string }).user_id;
    await client.post(`/v1/chats/${chatId}/users`, { user_name: 'Bob' }, bob.session).expect(201);

    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    contexts.push(context);
    const page = await context.newPage();
    const problems = watchProblems(page);
    const refused: string[] = [];
    page.on('response', (r) => {
      if (r.status() >= 400) refused.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`);
    });
    await page.goto(`http://127.0.0.1:${client.port}/`);
    await logIn(page, bob.userName);
    await live(page);

    // Bob's chat is closed; Alice writes twice.
    const item = page.locator(`.chat-item[data-chat="${chatId}"]`);
    await item.waitFor();
    for (const text of ['first, live only', 'second, live only']) {
      await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: text }, alice.session).expect(201);
    }
    await until('unread badge 2', async () => (await item.locator('.badge').textContent().catch(() => '')) === '2');

    // Opening it shows them (the server has none to page), and reads them.
    await item.click();
    await until('both messages shown', async () => (await shown(page)).join('|') === 'first, live only|second, live only');
    assert.equal(await page.getByText('No messages yet').count(), 0);
    await until('badge cleared', async () => (await item.locator('.badge').count()) === 0);
    // Cleared for good: nothing puts it back.
    await page.waitForTimeout(1000);
    assert.equal(await item.locator('.badge').count(), 0);
    assert.deepEqual(refused, []);
    assert.deepEqual(problems, []);
  });
});
