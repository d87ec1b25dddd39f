/// <reference lib="dom" />
// The web client's real-time and account features, in a real browser, against
// the run's one in-process app (both modes). The same features across two web
// processes of one services-mode stack: client-services.test.ts.
//
// Needs GET /v1/chats, GET /v1/chats/{id}/users, POST /v1/chats/{id}/read,
// POST /v1/direct, GET /v1/users, POST /v1/events/ticket + GET /v1/events
// (WebSocket), POST /v1/auth/refresh, POST /v1/auth/logout_all; its `before`
// fails (never skips) when they are missing.
import assert from 'node:assert/strict';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { harness } from '../helpers/harness';
import { buildUser, uniq } from '../helpers/factories';
import { chatIdOf, launchBrowser, live, logIn, relay, send, shown, signUp, until, type Relay } from './helpers';

describe('the web client, real time and accounts', function () {
  this.timeout(180_000);
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  const relays: Relay[] = [];
  let base = '';

  before(async () => {
    const { client } = harness().app;
    const probe = await buildUser(client);
    const missing: string[] = [];
    const chats = await fetch(`${`http://127.0.0.1:${client.port}`}/v1/chats`, { headers: { Authorization: `session_id ${probe.session}` } });
    if (chats.status !== 200) missing.push(`GET /v1/chats (${chats.status})`);
    const ticket = await fetch(`http://127.0.0.1:${client.port}/v1/events/ticket`, { method: 'POST', headers: { Authorization: `session_id ${probe.session}` } });
    if (ticket.status !== 201) missing.push(`POST /v1/events/ticket (${ticket.status})`);
    const login = (await client.post('/v1/auth/login', { user_name: probe.userName, password: probe.password })).body as { refresh_token?: string };
    if (typeof login.refresh_token !== 'string') missing.push('refresh_token in the login answer');
    assert.deepEqual(missing, [], 'this file needs the parallel endpoints');
    browser = await launchBrowser();
    base = `http://127.0.0.1:${client.port}`;
  });

  after(async () => {
    for (const c of contexts) await c.close();
    await browser?.close();
    for (const r of relays) await r.stop();
  });

  async function newPage(): Promise<{ page: Page; context: BrowserContext }> {
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    contexts.push(context);
    return { page: await context.newPage(), context };
  }

  it('direct chat by people search, messages both ways live, unread badge appears and clears, presence dot', async () => {
    const { page: alice } = await newPage();
    const { page: bob } = await newPage();
    const aliceName = uniq('alice');
    const bobName = uniq('bob');
    await bob.goto(`${base}/`);
    await signUp(bob, bobName);
    await alice.goto(`${base}/`);
    await signUp(alice, aliceName);
    await live(alice);
    await live(bob);

    await alice.getByRole('button', { name: 'People' }).click();
    await alice.getByLabel(/Find someone/).fill(bobName.slice(0, 8));
    await alice.getByRole('button', { name: `Message ${bobName}` }).click();
    await alice.waitForURL(/#\/chat\/[0-9a-f]{32}$/);
    const chatId = chatIdOf(alice);

    // Bob is on his chat list: the chat appears live, with an unread badge once Alice writes.
    await send(alice, 'hi bob, direct');
    const item = bob.locator(`.chat-item[data-chat="${chatId}"]`);
    await item.waitFor({ timeout: 10_000 });
    await until('unread badge 1', async () => (await item.locator('.badge').textContent().catch(() => '')) === '1');
    await until('online dot for alice', async () => (await item.locator('.dot').count()) === 1);

    // Opening the chat reads it: the badge clears, the divider marks the new message.
    await item.click();
    await until('message shown', async () => (await shown(bob)).includes('hi bob, direct'));
    await bob.locator('.divider').waitFor();
    await until('badge cleared', async () => (await item.locator('.badge').count()) === 0);

    const started = Date.now();
    await send(bob, 'hello alice, live');
    await until('live to alice', async () => (await shown(alice)).includes('hello alice, live'), 3_000);
    assert.ok(Date.now() - started < 3_000);
    await until('members with presence', async () => {
      await bob.getByRole('button', { name: /Members/ }).click();
      return (await bob.locator('.members .dot:not(.off)').count()) >= 1;
    });
  });

  it('reload keeps the session (refresh token in sessionStorage, session only in memory)', async () => {
    const { page } = await newPage();
    const name = uniq('erin');
    await page.goto(`${base}/`);
    await signUp(page, name);
    const stored = await page.evaluate(() => Object.keys(sessionStorage));
    assert.ok(stored.includes('messenger.refresh'));
    assert.equal(await page.evaluate(() => Object.values(sessionStorage).concat(Object.values(localStorage)).some((v) => /^[0-9a-f]{32}$/.test(v))), false, 'no session id stored');
    await page.reload();
    await page.locator('.me', { hasText: name }).waitFor();
  });

  it('offline and back: a message sent offline is shown pending, then arrives exactly once', async () => {
    const { page: alice } = await newPage();
    const { page: bob, context: bobContext } = await newPage();
    const aliceName = uniq('alice');
    await alice.goto(`${base}/`);
    await signUp(alice, aliceName);
    await alice.getByRole('button', { name: 'New or join' }).click();
    await alice.getByLabel('Chat name').fill('offline test');
    await alice.getByRole('button', { name: 'Create' }).click();
    await alice.waitForURL(/#\/chat\/[0-9a-f]{32}$/);
    const chatId = chatIdOf(alice);
    await bob.goto(`${base}/#/join/${chatId}`);
    await signUp(bob, uniq('bob'));
    await bob.getByRole('button', { name: 'Join', exact: true }).click();
    await bob.waitForURL(new RegExp(`#/chat/${chatId}$`));
    await live(bob);

    await bobContext.setOffline(true);
    await send(bob, 'sent while offline');
    await bob.locator('.msg.pending').waitFor();
    await bob.waitForTimeout(3_000);
    await bobContext.setOffline(false);
    await until('arrives at alice', async () => (await shown(alice)).includes('sent while offline'), 40_000);
    await until('bob sees it stored', async () => (await shown(bob)).includes('sent while offline'), 40_000);
    await alice.waitForTimeout(2_000);
    assert.equal((await shown(alice)).filter((t) => t === 'sent while offline').length, 1);
    assert.equal((await shown(bob)).filter((t) => t === 'sent while offline').length, 1);
    assert.equal(await bob.locator('.msg.pending').count(), 0);
  });

  it('log out everywhere in one browser signs the other out', async () => {
    const { page: one } = await newPage();
    const { page: two } = await newPage();
    const name = uniq('frank');
    await one.goto(`${base}/`);
    await signUp(one, name);
    await two.goto(`${base}/`);
    await logIn(two, name);
    await live(two);
    await one.getByRole('button', { name: 'Account' }).click();
    await one.getByRole('button', { name: 'Log out everywhere' }).click();
    await one.getByRole('button', { name: 'Log in' }).waitFor();
    await two.getByRole('button', { name: 'Log in' }).waitFor({ timeout: 10_000 });
  });

  it('signing out and in again while a ticket request is on its way: the socket opens once, with the new session', async () => {
    // Until 2026-12-07 the new sign-in did not connect (the old ticket request
    // was still under way), and the old request, answered, opened the socket
    // with a ticket of the ended session: 401, then a reconnect after a backoff.
    const { page } = await newPage();
    const name = uniq('gina');
    await page.goto(`${base}/`);
    await signUp(page, name);
    await live(page);
    await page.getByRole('button', { name: 'Account' }).click();
    await page.getByRole('button', { name: 'Log out', exact: true }).click();
    await page.getByRole('button', { name: 'Log in' }).waitFor();

    // The next ticket is issued by the server at once, but reaches the page only when the test says so.
    let hold = true;
    let release: () => void = () => undefined;
    const released = new Promise<void>((r) => (release = r));
    let held: () => void = () => undefined;
    const heldOnce = new Promise<void>((r) => (held = r));
    const ticketOf = new Map<string, string>();
    await page.route('**/v1/events/ticket', async (route) => {
      const res = await route.fetch();
      const body = (await res.json()) as { ticket?: string };
      if (body.ticket !== undefined) ticketOf.set(body.ticket, route.request().headers().authorization ?? '');
      if (hold) {
        hold = false;
        held();
        await released;
      }
      await route.fulfill({ response: res });
    });
    const sessions: string[] = [];
    page.on('response', (r) => {
      if (r.url().endsWith('/v1/auth/login') && r.status() === 201) void r.json().then((b: { session_id: string }) => sessions.push(b.session_id));
    });
    const sockets: string[] = [];
    page.on('websocket', (ws) => sockets.push(new URL(ws.url()).searchParams.get('ticket') ?? ''));

    await logIn(page, name);
    await heldOnce;
    await page.getByRole('button', { name: 'Account' }).click();
    await page.getByRole('button', { name: 'Log out', exact: true }).click();
    await page.getByRole('button', { name: 'Log in' }).waitFor();
    await logIn(page, name);
    release();
    await live(page);
    await page.waitForTimeout(1_500);
    await live(page);
    assert.equal(sessions.length, 2);
    assert.deepEqual(
      sockets.map((t) => ticketOf.get(t)),
      [`session_id ${sessions[1]}`],
      'one socket, opened with a ticket of the session in use',
    );
  });

  // The web client keeps what came live across a chat list reload when the
  // server's list does not have it (MESSAGE_STORAGE_TYPE=no_storage,
  // client-nostore.test.ts); here the messages are stored, and the server's
  // answer wins: a read made in another tab while this one was cut off.
  it('a tab cut off while another reads the chat takes the server\'s unread count when it reconnects', async () => {
    const { client } = harness().app;
    const alice = await buildUser(client);
    const bob = await buildUser(client);
    const chatId = ((await client.post('/v1/chats', { chat_name: 'read meanwhile' }, alice.session).expect(201)).body as { chat_id: string }).chat_id;
    const aliceId = ((await client.post(`/v1/chats/${chatId}/users`, { user_name: 'Alice' }, alice.session).expect(201)).body as { user_id: string }).user_id;
    await client.post(`/v1/chats/${chatId}/users`, { user_name: 'Bob' }, bob.session).expect(201);
    const server = await relay(client.port);
    relays.push(server);
    const { page: reader } = await newPage();
    const { page: cutOff } = await newPage();
    await reader.goto(`${base}/`);
    await cutOff.goto(`http://127.0.0.1:${server.port}/`);
    for (const page of [reader, cutOff]) {
      await logIn(page, bob.userName);
      await live(page);
    }
    const badge = (page: Page) => page.locator(`.chat-item[data-chat="${chatId}"] .badge`);
    for (const text of ['one', 'two']) {
      await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: text }, alice.session).expect(201);
    }
    for (const page of [reader, cutOff]) await until('badge 2', async () => (await badge(page).textContent().catch(() => '')) === '2');

    await server.stop();
    await cutOff.locator('.conn:not(.live)').waitFor();
    await reader.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await until('read in the other tab', async () => (await badge(reader).count()) === 0);
    assert.equal(await badge(cutOff).textContent(), '2');
    await server.start();
    await live(cutOff);
    await until('the server\'s count, 0', async () => (await badge(cutOff).count()) === 0, 20_000);
    assert.equal(await cutOff.locator(`.chat-item[data-chat="${chatId}"] .last .text`).textContent(), 'Alice: two');
  });
  // The same for a chat this tab had opened before: on reconnecting it
  // resumes that chat, and the messages it missed come again as frames. The
  // frames are held here until the chat list (asked for on reconnecting)
  // has been answered: until 2026-12-07 they were then counted on top of
  // the server's count, which had them already, and the badge showed the
  // messages read in the other tab as unread (2 here) for good.
  it('a tab cut off while another reads a chat it had opened: the messages it missed, replayed after the chat list came, are not counted again', async () => {
    const { client } = harness().app;
    const alice = await buildUser(client);
    const bob = await buildUser(client);
    const chatId = ((await client.post('/v1/chats', { chat_name: 'read meanwhile, opened' }, alice.session).expect(201)).body as { chat_id: string }).chat_id;
    const aliceId = ((await client.post(`/v1/chats/${chatId}/users`, { user_name: 'Alice' }, alice.session).expect(201)).body as { user_id: string }).user_id;
    await client.post(`/v1/chats/${chatId}/users`, { user_name: 'Bob' }, bob.session).expect(201);
    const server = await relay(client.port);
    relays.push(server);
    const { page: reader } = await newPage();
    const { page: cutOff } = await newPage();
    // The cut-off tab's frames from the server, held while `holding`.
    let holding = false;
    const held: Array<() => void> = [];
    await cutOff.routeWebSocket(/\/v1\/events/, (ws) => {
      const upstream = ws.connectToServer();
      upstream.onMessage((m) => {
        if (holding) held.push(() => ws.send(m));
        else ws.send(m);
      });
    });
    await reader.goto(`${base}/`);
    await cutOff.goto(`http://127.0.0.1:${server.port}/`);
    for (const page of [reader, cutOff]) {
      await logIn(page, bob.userName);
      await live(page);
    }
    // The cut-off tab opens the chat once and leaves it.
    await cutOff.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await cutOff.getByText('No messages yet. Say hello!').waitFor();
    await cutOff.evaluate(() => {
      location.hash = '#/';
    });
    const badge = (page: Page) => page.locator(`.chat-item[data-chat="${chatId}"] .badge`);
    const last = (page: Page) => page.locator(`.chat-item[data-chat="${chatId}"] .last .text`);
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'one' }, alice.session).expect(201);
    for (const page of [reader, cutOff]) await until('Alice: one', async () => (await last(page).textContent()) === 'Alice: one');

    await server.stop();
    await cutOff.locator('.conn:not(.live)').waitFor();
    for (const text of ['two', 'three']) {
      await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: text }, alice.session).expect(201);
    }
    await until('Alice: three in the reader', async () => (await last(reader).textContent()) === 'Alice: three');
    await reader.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await until('read in the other tab', async () => (await badge(reader).count()) === 0);
    await reader.evaluate(() => {
      location.hash = '#/';
    });
    holding = true;
    const listed = cutOff.waitForResponse((r) => new URL(r.url()).pathname === '/v1/chats' && r.status() === 200, { timeout: 30_000 });
    await server.start();
    await listed;
    await until('the server\'s count, 0', async () => (await badge(cutOff).count()) === 0);
    holding = false;
    for (const f of held.splice(0)) f();
    await until('the missed messages in the list', async () => (await last(cutOff).textContent()) === 'Alice: three', 20_000);
    await live(cutOff);
    await cutOff.waitForTimeout(1000);
    assert.equal(await badge(cutOff).count(), 0);
    // A message after that counts once.
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'four' }, alice.session).expect(201);
    await until('badge 1', async () => (await badge(cutOff).allTextContents()).join() === '1');
    await cutOff.waitForTimeout(500);
    assert.equal(await badge(cutOff).textContent(), '1');
  });
});
