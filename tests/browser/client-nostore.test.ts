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
import { launchBrowser, live, logIn, relay, send, shown, until, watchProblems, type Relay } from './helpers';
import type { Page } from 'playwright-core';

/** A list item's badge and last-message preview, as shown ('' for none). */
async function itemShows(page: Page, chatId: string): Promise<{ badge: string; last: string }> {
  const item = page.locator(`.chat-item[data-chat="${chatId}"]`);
  return { badge: (await item.locator('.badge').allTextContents()).join(''), last: (await item.locator('.last .text').allTextContents()).join('') };
}

describe('the web client, MESSAGE_STORAGE_TYPE=no_storage', function () {
  this.timeout(120_000);
  let browser: Browser;
  let app: Running;
  const contexts: BrowserContext[] = [];
  const relays: Relay[] = [];

  before(async () => {
    app = await startApp(harness().infra, { MESSAGE_STORAGE_TYPE: 'no_storage' });
    browser = await launchBrowser();
  });

  after(async () => {
    for (const c of contexts) await c.close();
    await browser?.close();
    for (const r of relays) await r.stop();
    await app?.close();
  });

  /** Alice and Bob in a new group chat: its id and Alice's user_id there. */
  async function groupOfTwo(name: string) {
    const { client } = app;
    const alice = await buildUser(client);
    const bob = await buildUser(client);
    const chatId = ((await client.post('/v1/chats', { chat_name: name }, alice.session).expect(201)).body as { chat_id: string }).chat_id;
    const aliceId = ((await client.post(`/v1/chats/${chatId}/users`, { user_name: 'Alice' }, alice.session).expect(201)).body as { user_id: string }).user_id;
    await client.post(`/v1/chats/${chatId}/users`, { user_name: 'Bob' }, bob.session).expect(201);
    return { alice, bob, chatId, aliceId };
  }

  async function newPage(port = app.client.port) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    contexts.push(context);
    const page = await context.newPage();
    const problems = watchProblems(page);
    await page.goto(`http://127.0.0.1:${port}/`);
    return { page, problems };
  }

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

  // Until 2026-12-07 every chat list reload put the server's answer in place
  // of what had come live: last message null ("No messages yet") and unread 0.
  it('a chat list reload keeps the last message and unread badge that came live: for a chat not known yet, and after a reconnect', async () => {
    const { client } = app;
    const { alice, bob, chatId, aliceId } = await groupOfTwo('kept live');
    const server = await relay(client.port);
    relays.push(server);
    const { page, problems } = await newPage(server.port);
    let listLoads = 0;
    page.on('response', (r) => {
      if (r.request().method() === 'GET' && new URL(r.url()).pathname === '/v1/chats' && r.status() === 200) listLoads += 1;
    });
    await logIn(page, bob.userName);
    await live(page);
    await page.locator(`.chat-item[data-chat="${chatId}"]`).waitFor();
    for (const text of ['first, live only', 'second, live only']) {
      await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: text }, alice.session).expect(201);
    }
    const counted = { badge: '2', last: 'Alice: second, live only' };
    await until('unread badge 2', async () => (await itemShows(page, chatId)).badge === '2');
    assert.deepEqual(await itemShows(page, chatId), counted);

    // Carol opens a direct chat with Bob and writes: frames for a chat Bob's tab does not know, so the list is loaded again.
    const carol = await buildUser(client);
    const before = listLoads;
    const direct = (await client.post('/v1/direct', { user_name: bob.userName }, carol.session).expect(201)).body as { chat_id: string; user_id: string };
    await client.post(`/v1/chats/${direct.chat_id}/messages?user_id=${direct.user_id}`, { message: 'hello, Bob' }, carol.session).expect(201);
    await until('the direct chat listed with its live message', async () => {
      const shows = await itemShows(page, direct.chat_id).catch(() => undefined);
      return shows?.badge === '1' && shows.last === `${carol.userName}: hello, Bob`;
    });
    await until('the list loaded again', async () => listLoads > before);
    assert.deepEqual(await itemShows(page, chatId), counted);

    // The server goes away and comes back: the socket reconnects and the list is loaded again.
    await server.stop();
    await page.locator('.conn:not(.live)').waitFor();
    const beforeReconnect = listLoads;
    await server.start();
    await live(page);
    await until('the list loaded after the reconnect', async () => listLoads > beforeReconnect, 20_000);
    await page.waitForTimeout(500);
    assert.deepEqual(await itemShows(page, chatId), counted);
    assert.deepEqual(await itemShows(page, direct.chat_id), { badge: '1', last: `${carol.userName}: hello, Bob` });

    // Read here, it stays read when the list is loaded again.
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await until('both messages shown', async () => (await shown(page)).join('|') === 'first, live only|second, live only');
    await until('badge cleared', async () => (await itemShows(page, chatId)).badge === '');
    await page.evaluate(() => {
      location.hash = '#/';
    });
    await server.stop();
    await page.locator('.conn:not(.live)').waitFor();
    const afterRead = listLoads;
    await server.start();
    await live(page);
    await until('the list loaded after the second reconnect', async () => listLoads > afterRead, 20_000);
    await page.waitForTimeout(500);
    assert.deepEqual(await itemShows(page, chatId), { badge: '', last: 'Alice: second, live only' });
    assert.deepEqual(problems, []);
  });

  // Until 2026-12-07 reading a live message moved no marker, so no `read`
  // frame went out and the account's other tabs kept their badge.
  it('reading live messages in one tab clears their badge in the account\'s other tabs; a message that comes after still counts', async () => {
    const { client } = app;
    const { alice, bob, chatId, aliceId } = await groupOfTwo('read elsewhere');
    const tabs = [await newPage(), await newPage()];
    for (const { page } of tabs) {
      await logIn(page, bob.userName);
      await live(page);
      await page.locator(`.chat-item[data-chat="${chatId}"]`).waitFor();
    }
    for (const text of ['one', 'two']) {
      await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: text }, alice.session).expect(201);
    }
    for (const { page } of tabs) await until('badge 2 in each tab', async () => (await itemShows(page, chatId)).badge === '2');

    // Read in the first tab: the second tab's badge clears.
    const [first, second] = tabs.map((t) => t.page);
    await first.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await until('both shown', async () => (await shown(first)).join('|') === 'one|two');
    await until('badge cleared in the reading tab', async () => (await itemShows(first, chatId)).badge === '');
    await until('badge cleared in the other tab', async () => (await itemShows(second, chatId)).badge === '');

    // The first tab leaves the chat; a new message counts in both, until read in the second.
    await first.evaluate(() => {
      location.hash = '#/';
    });
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'three' }, alice.session).expect(201);
    for (const page of [first, second]) await until('badge 1 in each tab', async () => (await itemShows(page, chatId)).badge === '1');
    await second.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await until('three shown in the second tab', async () => (await shown(second)).includes('three'));
    await until('badge cleared in the first tab', async () => (await itemShows(first, chatId)).badge === '');
    for (const t of tabs) assert.deepEqual(t.problems, []);
  });

  // Until 2026-12-07 the chat's cursor moved to the last live message, which
  // is no cursor (never stored): opening the chat again asked for the page
  // after it, got 400 bad-cursor, and showed "That message is not in this
  // chat." with the badge left as it was.
  it('a chat opened before, opened again after live messages came: they are shown, no error, and its badge clears', async () => {
    const { client } = app;
    const { alice, bob, chatId, aliceId } = await groupOfTwo('opened twice');
    const { page, problems } = await newPage();
    const refused: string[] = [];
    page.on('response', (r) => {
      if (r.status() >= 400) refused.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`);
    });
    await logIn(page, bob.userName);
    await live(page);
    const item = page.locator(`.chat-item[data-chat="${chatId}"]`);
    await item.click();
    await page.getByText('No messages yet. Say hello!').waitFor();
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'while open' }, alice.session).expect(201);
    await until('shown while open', async () => (await shown(page)).includes('while open'));

    await page.evaluate(() => {
      location.hash = '#/';
    });
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'while closed' }, alice.session).expect(201);
    await until('badge 1', async () => (await itemShows(page, chatId)).badge === '1');
    await item.click();
    await until('both shown', async () => (await shown(page)).join('|') === 'while open|while closed');
    await until('badge cleared', async () => (await itemShows(page, chatId)).badge === '');
    assert.equal(await page.locator('.chat .error').count(), 0);
    // Bob answers: sent, shown once.
    await send(page, 'answer');
    await until('the answer shown', async () => (await shown(page)).includes('answer'));
    await page.waitForTimeout(500);
    assert.deepEqual(await shown(page), ['while open', 'while closed', 'answer']);
    // No page after a live message is asked for (it would be refused, 400
    // bad-cursor): the client learns from the chat list that live messages
    // are not stored (until 2026-12-07, from one such 400 per tab).
    assert.deepEqual(refused, []);
    await page.evaluate(() => {
      location.hash = '#/';
    });
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'third time' }, alice.session).expect(201);
    await until('badge 1 again', async () => (await itemShows(page, chatId)).badge === '1');
    await item.click();
    await until('all shown', async () => (await shown(page)).join('|') === 'while open|while closed|answer|third time');
    await until('badge cleared again', async () => (await itemShows(page, chatId)).badge === '');
    assert.deepEqual(refused, []);
    assert.deepEqual(problems, []);
  });
  // Until 2026-12-07 a message sent over HTTP (no socket) was answered 201
  // and then stayed "Sending…" for good: the client waited for a page or a
  // frame to bring it, and in this mode neither ever does.
  it('a message sent over HTTP while there is no socket is shown sent, not "Sending…" for good; the other member gets it once', async () => {
    const { alice, bob, chatId } = await groupOfTwo('sent without a socket');
    // Alice listens live.
    const { page: alicePage } = await newPage();
    await logIn(alicePage, alice.userName);
    await live(alicePage);
    await alicePage.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await alicePage.getByText('No messages yet. Say hello!').waitFor();
    // Bob's tab gets no socket: every ticket is refused (503), so it sends over HTTP.
    const { page, problems } = await newPage();
    await page.route('**/v1/events/ticket', (route) => route.fulfill({ status: 503, contentType: 'application/json', body: '{"message":"service-unavailable"}' }));
    const posts: number[] = [];
    page.on('response', (r) => {
      if (r.request().method() === 'POST' && /\/messages$/.test(new URL(r.url()).pathname)) posts.push(r.status());
    });
    await logIn(page, bob.userName);
    await page.locator('.conn.polling').waitFor();
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await page.getByText('No messages yet. Say hello!').waitFor();
    await send(page, 'over http');
    await until('the POST answered', async () => posts.length > 0);
    assert.deepEqual(posts, [201]);
    await until('Alice got it', async () => (await shown(alicePage)).includes('over http'));
    // Sent: the text stays on screen, without "Sending…", and with no retry.
    await until('no longer "Sending…"', async () => (await page.getByText('Sending…').count()) === 0);
    await page.getByText('over http').waitFor();
    await page.waitForTimeout(3000);
    assert.equal(await page.getByText('Sending…').count(), 0);
    assert.equal(await page.getByText('over http').count(), 1);
    assert.deepEqual(posts, [201]);
    assert.deepEqual(await shown(alicePage), ['over http']);
    assert.deepEqual(problems, []);
  });

  it('once the tab knows that nothing is stored, a message sent over HTTP after its socket went is shown as a message in its place', async () => {
    const { client } = app;
    const { alice, bob, chatId, aliceId } = await groupOfTwo('sent after the socket went');
    const { page: alicePage } = await newPage();
    await logIn(alicePage, alice.userName);
    await live(alicePage);
    await alicePage.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await alicePage.getByText('No messages yet. Say hello!').waitFor();
    const server = await relay(client.port);
    relays.push(server);
    const { page, problems } = await newPage(server.port);
    await logIn(page, bob.userName);
    await live(page);
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await page.getByText('No messages yet. Say hello!').waitFor();
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'hello Bob' }, alice.session).expect(201);
    await until('hello shown', async () => (await shown(page)).includes('hello Bob'));
    // The socket goes and does not come back (tickets refused); requests get through again.
    await page.route('**/v1/events/ticket', (route) => route.fulfill({ status: 503, contentType: 'application/json', body: '{"message":"service-unavailable"}' }));
    await server.stop();
    await page.locator('.conn:not(.live)').waitFor();
    await server.start();
    await page.locator('.conn.polling').waitFor({ timeout: 20_000 });
    await send(page, 'hello Alice, over http');
    await until('shown as a message', async () => (await shown(page)).join('|') === 'hello Bob|hello Alice, over http');
    assert.equal(await page.locator('.msg.pending').count(), 0);
    await until('Alice got it', async () => (await shown(alicePage)).join('|') === 'hello Bob|hello Alice, over http');
    assert.deepEqual(problems, []);
  });

  // Until 2026-12-07 the chat's cursor followed its live messages until the
  // client learnt (from a 400 bad-cursor) that they are not stored: a tab
  // that polled an open chat while its socket was down got one 400, logged
  // in the browser's console.
  it('a reconnect with a chat open after live messages asks no page that is refused: no 400, nothing in the console', async () => {
    const { client } = app;
    const { alice, bob, chatId, aliceId } = await groupOfTwo('reconnect, no 400');
    const server = await relay(client.port);
    relays.push(server);
    const { page, problems } = await newPage(server.port);
    const refused: string[] = [];
    const consoleErrors: string[] = [];
    page.on('response', (r) => {
      if (r.status() >= 400) refused.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`);
    });
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    await logIn(page, bob.userName);
    await live(page);
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await page.getByText('No messages yet. Say hello!').waitFor();
    for (const text of ['one', 'two']) {
      await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: text }, alice.session).expect(201);
    }
    await until('both shown', async () => (await shown(page)).join('|') === 'one|two');
    await server.stop();
    await page.locator('.conn.offline').waitFor();
    await server.start();
    // Polled (every 2 s) before the socket is back, and again after.
    await until('a poll answered while the socket is still down, or the socket back', async () => (await page.locator('.conn.offline').count()) === 0, 20_000);
    await live(page);
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'three' }, alice.session).expect(201);
    await until('three shown', async () => (await shown(page)).join('|') === 'one|two|three');
    await page.evaluate(() => {
      location.hash = '#/';
    });
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await until('all shown again', async () => (await shown(page)).join('|') === 'one|two|three');
    assert.deepEqual(refused, []);
    assert.deepEqual(
      consoleErrors.filter((e) => !/ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|WebSocket/.test(e)),
      [],
    );
    assert.deepEqual(problems, []);
  });

  // Until 2026-12-07 a search in this mode said "Done. 0 found." and nothing else.
  it('a search says that this server stores no messages to search, rather than only "0 found"', async () => {
    const { client } = app;
    const { alice, bob, chatId, aliceId } = await groupOfTwo('search nothing');
    const { page, problems } = await newPage();
    await logIn(page, bob.userName);
    await live(page);
    await page.locator(`.chat-item[data-chat="${chatId}"]`).waitFor();
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'findable words here' }, alice.session).expect(201);
    await until('badge 1', async () => (await itemShows(page, chatId)).badge === '1');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByLabel('Words to find').fill('findable');
    await page.getByRole('button', { name: 'Search' }).last().click();
    await page.getByText('0 found').waitFor({ timeout: 30_000 });
    await page.getByText('This server does not store messages', { exact: false }).waitFor({ timeout: 5_000 });
    assert.deepEqual(problems, []);
  });

  // Until 2026-12-07 an open chat showed the last 300 live messages and
  // scrolling back asked the server for the older ones, which it does not
  // have: the first messages of the session could not be read again.
  it('more than 300 live messages in an open chat: scrolling back reaches the first one, the DOM stays bounded', async () => {
    const { client } = app;
    const { alice, bob, chatId, aliceId } = await groupOfTwo('many live');
    const { page, problems } = await newPage();
    const refused: string[] = [];
    page.on('response', (r) => {
      if (r.status() >= 400) refused.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`);
    });
    await logIn(page, bob.userName);
    await live(page);
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await page.getByText('No messages yet. Say hello!').waitFor();
    for (let i = 1; i <= 350; i++) {
      await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: `live ${i}` }, alice.session).expect(201);
    }
    await until('the last shown', async () => (await shown(page)).includes('live 350'), 30_000);
    await until('scrolled back to the first', async () => {
      await page.$eval('.messages', (el) => el.scrollTo(0, 0));
      return (await shown(page))[0] === 'live 1';
    }, 30_000);
    const texts = await shown(page);
    assert.ok(texts.length <= 300, `${texts.length} messages in the DOM`);
    assert.deepEqual(texts.slice(0, 3), ['live 1', 'live 2', 'live 3']);
    assert.equal(await page.getByText('Scroll up for older messages').count(), 0);
    // And forward again to the newest.
    await page.getByRole('button', { name: 'Newest messages ↓' }).click();
    await until('the newest again', async () => (await shown(page)).at(-1) === 'live 350');
    assert.deepEqual(refused, []);
    assert.deepEqual(problems, []);
  });
});
