/// <reference lib="dom" />
// The web client's fixes after an exploratory run in a real browser: scrolling
// a long chat both ways, opening a chat on its unread messages, reading tall
// messages, shared display names, session refresh, right-to-left text, the
// offline state, sending while scrolled back, chat ids in the address,
// presence dots, over-long drafts, the account's own name after a login
// typed in other case. Each test fails on the client before the fix.
import assert from 'node:assert/strict';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { harness, startApp, type Client } from '../helpers/harness';
import { buildUser, type TestUser } from '../helpers/factories';
import { fillLastMessages } from '../../migrations/012_chat_last_message_json';
import { launchBrowser, logIn, PASSWORD, relay, send, shown, until, watchProblems, type Relay } from './helpers';

/** Stores `n` messages `${prefix} 1` … `${prefix} n` by `memberId` with SQL (the HTTP path is rate limited). */
async function seed(chatId: string, memberId: string, n: number, prefix: string, text = (g: string) => `'${prefix} ' || ${g}`): Promise<void> {
  const { infra } = harness();
  await infra.db.raw(
    `WITH c AS (UPDATE chats SET last_seq = last_seq + ${n} WHERE id = ? RETURNING last_seq)
     INSERT INTO messages (chat_id, member_id, seq, text)
     SELECT ?, ?, c.last_seq - ${n} + g, ${text('g')} FROM c, generate_series(1, ${n}) AS g`,
    [chatId, chatId, memberId],
  );
  await fillLastMessages(infra.db);
}

async function chatWith(client: Client, owner: TestUser, name: string): Promise<{ chatId: string; memberId: string }> {
  const chatId = ((await client.post('/v1/chats', { chat_name: name }, owner.session).expect(201)).body as { chat_id: string }).chat_id;
  const memberId = ((await client.post(`/v1/chats/${chatId}/users`, { user_name: owner.userName }, owner.session).expect(201)).body as { user_id: string }).user_id;
  return { chatId, memberId };
}

/** Texts of the messages at least partly inside the message pane, top to bottom. */
function onScreen(page: Page): Promise<string[]> {
  return page.$eval('.messages', (el) => {
    const pane = el.getBoundingClientRect();
    return [...el.querySelectorAll('.msg:not(.pending)')]
      .filter((m) => {
        const r = m.getBoundingClientRect();
        return r.bottom > pane.top + 1 && r.top < pane.bottom - 1;
      })
      .map((m) => m.querySelector('.text')?.textContent ?? '');
  });
}

/** Scrolls the message pane with the mouse wheel, then waits until it has moved, no block is loading and it has stopped. */
async function wheel(page: Page, dy: number): Promise<void> {
  const state = () => page.$eval('.messages', (el) => (el.querySelector('.more')?.textContent === 'Loading…' ? -1 : el.scrollTop));
  const start = await state();
  await page.mouse.wheel(0, dy);
  let last = start;
  let same = 0;
  for (let i = 0; i < 100 && same < 2; i++) {
    await page.waitForTimeout(50);
    const now = await state();
    same = now === last && now !== -1 && (now !== start || i > 20) ? same + 1 : 0;
    last = now;
  }
}

const num = (t: string): number => Number(t.replace(/^\D+/, ''));

describe('the web client after the exploratory run', function () {
  this.timeout(180_000);
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  const relays: Relay[] = [];
  let base = '';

  before(async () => {
    browser = await launchBrowser();
    base = `http://127.0.0.1:${harness().app.client.port}`;
  });

  after(async () => {
    for (const c of contexts) await c.close();
    await browser?.close();
    for (const r of relays) await r.stop();
  });

  /** A way to the server that the test can take away and bring back (connection refused meanwhile). */
  async function outage(): Promise<Relay> {
    const r = await relay(harness().app.client.port);
    relays.push(r);
    return r;
  }

  async function newPage(width = 1100, height = 800, at = base): Promise<{ page: Page; context: BrowserContext; problems: string[] }> {
    const context = await browser.newContext({ viewport: { width, height } });
    contexts.push(context);
    const page = await context.newPage();
    const problems = watchProblems(page);
    await page.goto(`${at}/`);
    return { page, context, problems };
  }

  it('scrolling a 700-message chat (all read) back to its first message and forward again never jumps or sticks', async () => {
    const { client } = harness().app;
    const dave = await buildUser(client);
    const { chatId, memberId } = await chatWith(client, dave, 'long scroll');
    await seed(chatId, memberId, 699, 'message');
    // Posting moves the poster's read marker: the chat is read, so it opens at its end.
    await client.post(`/v1/chats/${chatId}/messages?user_id=${memberId}`, { message: 'message 700' }, dave.session).expect(201);

    const { page, problems } = await newPage(1000, 1500);
    await logIn(page, dave.userName);
    await page.goto(`${base}/#/chat/${chatId}`);
    await until('the last message', async () => (await onScreen(page)).includes('message 700'), 30_000);
    await page.mouse.move(500, 500);

    // Up with the mouse wheel, less than a pane at a time: whatever was at the
    // top of the pane before a turn is still on screen after it, loads included.
    let turns = 0;
    for (;;) {
      const before = await onScreen(page);
      if (before.includes('message 1')) break;
      assert.ok(++turns < 200, `stuck: still ${JSON.stringify(before.slice(0, 2))} on screen after ${turns} turns`);
      await wheel(page, -1000);
      const after = await onScreen(page);
      assert.ok(after.includes(before[0]), `jumped: ${before[0]} was at the top, now ${after[0]} … ${after[after.length - 1]}`);
    }
    assert.ok((await page.locator('.messages .msg').count()) <= 300);

    // And down again to the end, by the same rule.
    turns = 0;
    for (;;) {
      const before = await onScreen(page);
      if (before.includes('message 700')) break;
      assert.ok(++turns < 200, `stuck going down at ${before[before.length - 1]}`);
      await wheel(page, 1000);
      const after = await onScreen(page);
      assert.ok(after.includes(before[before.length - 1]), `jumped: ${before[before.length - 1]} was at the bottom, now ${after[0]} … ${after[after.length - 1]}`);
      assert.ok(num(after[after.length - 1]) >= num(before[before.length - 1]), 'went backwards');
    }
    assert.ok((await page.locator('.messages .msg').count()) <= 300);
    assert.deepEqual(problems, []);
  });

  it('a chat with 320 unread messages opens at the oldest unread one, the divider on screen above it, and marks read only what was shown', async () => {
    const { client } = harness().app;
    const erin = await buildUser(client);
    const frank = await buildUser(client);
    const { chatId, memberId } = await chatWith(client, erin, 'many unread');
    await client.post(`/v1/chats/${chatId}/users`, { user_name: frank.userName }, frank.session).expect(201);
    await seed(chatId, memberId, 5, 'old');
    const page1 = (await client.get(`/v1/chats/${chatId}/messages?limit=10`, frank.session).expect(200)).body as { messages: Array<{ message_id: string }> };
    await client.post(`/v1/chats/${chatId}/read`, { message_id: page1.messages[4].message_id }, frank.session).expect(200);
    await seed(chatId, memberId, 320, 'new');

    const { page, problems } = await newPage(1100, 800);
    const reads: string[] = [];
    page.on('request', (r) => {
      if (r.method() === 'POST' && r.url().endsWith(`/v1/chats/${chatId}/read`)) reads.push((JSON.parse(r.postData() ?? '{}') as { message_id: string }).message_id);
    });
    await logIn(page, frank.userName);
    const item = page.locator(`.chat-item[data-chat="${chatId}"]`);
    await until('unread 320', async () => (await item.locator('.badge').textContent().catch(() => '')) === '320');
    await item.click();
    await page.locator('.divider').waitFor();
    await page.waitForTimeout(1_500);

    // The divider sits right above "new 1", and both are on screen.
    assert.equal(await page.$eval('.divider', (d) => d.nextElementSibling?.querySelector('.text')?.textContent), 'new 1');
    const dividerShown = await page.$eval('.divider', (d) => {
      const pane = (d.closest('.messages') as HTMLElement).getBoundingClientRect();
      const r = d.getBoundingClientRect();
      return r.top >= pane.top && r.bottom <= pane.bottom;
    });
    assert.ok(dividerShown, 'the divider is on screen');
    const visible = await onScreen(page);
    assert.ok(visible.includes('new 1'), JSON.stringify(visible));

    // Read only up to what was on screen: every marker sent names a message shown, and the rest stays unread.
    const shownIds = await page.$$eval('.messages .msg[data-id]', (els) => {
      const pane = (els[0].closest('.messages') as HTMLElement).getBoundingClientRect();
      return els.filter((m) => m.getBoundingClientRect().top < pane.bottom).map((m) => (m as HTMLElement).dataset.id);
    });
    assert.ok(reads.length > 0, 'something was marked read');
    for (const id of reads) assert.ok(shownIds.includes(id), `marked read ${id}, which was not on screen`);
    const unread = ((await client.get('/v1/chats', frank.session).expect(200)).body as { chats: Array<{ chat_id: string; unread: number }> }).chats.find((c) => c.chat_id === chatId)?.unread;
    const newOnScreen = visible.filter((t) => t.startsWith('new ')).length;
    assert.ok(unread !== undefined && unread >= 320 - newOnScreen, `unread ${unread} with ${newOnScreen} new messages on screen`);
    assert.deepEqual(problems, []);
  });

  it('a message taller than the pane (16,000 characters) is marked read once its end has been on screen', async () => {
    const { client } = harness().app;
    const alice = await buildUser(client);
    const bob = await buildUser(client);
    const { chatId, memberId } = await chatWith(client, alice, 'tall message');
    await client.post(`/v1/chats/${chatId}/users`, { user_name: bob.userName }, bob.session).expect(201);
    const text = 'lorem ipsum dolor sit amet '.repeat(600).slice(0, 16_000);
    await client.post(`/v1/chats/${chatId}/messages?user_id=${memberId}`, { message: text }, alice.session).expect(201);
    const unread = async () => ((await client.get('/v1/chats', bob.session).expect(200)).body as { chats: Array<{ chat_id: string; unread: number }> }).chats.find((c) => c.chat_id === chatId)?.unread;

    const { page, problems } = await newPage(1100, 700);
    await logIn(page, bob.userName);
    const item = page.locator(`.chat-item[data-chat="${chatId}"]`);
    await until('unread 1', async () => (await item.locator('.badge').textContent().catch(() => '')) === '1');
    await item.click();
    await page.locator('.divider').waitFor();
    const tall = await page.$eval('.messages', (el) => ({ pane: el.clientHeight, msg: (el.querySelector('.msg') as HTMLElement).offsetHeight }));
    assert.ok(tall.msg > 2 * tall.pane, `the message (${tall.msg}px) is over twice the pane (${tall.pane}px)`);
    // Opened at its top: its end has not been on screen, so it is not read yet.
    await page.waitForTimeout(1_000);
    assert.equal(await unread(), 1);
    // Scrolled to its end: read.
    await page.mouse.move(700, 400);
    for (let i = 0; i < 40; i++) {
      const atEnd = await page.$eval('.messages', (el) => el.scrollHeight - el.scrollTop - el.clientHeight < 2);
      if (atEnd) break;
      await page.mouse.wheel(0, 400);
      await page.waitForTimeout(50);
    }
    await until('read on the server', async () => (await unread()) === 0, 5_000);
    await until('badge cleared', async () => (await item.locator('.badge').count()) === 0);
    assert.deepEqual(problems, []);
  });

  it('two members under the same display name are told apart in message headers, the members list and the chat list', async () => {
    const { client } = harness().app;
    const carol = await buildUser(client);
    const dave = await buildUser(client);
    const chatId = ((await client.post('/v1/chats', { chat_name: 'team' }, carol.session).expect(201)).body as { chat_id: string }).chat_id;
    const realId = ((await client.post(`/v1/chats/${chatId}/users`, { user_name: 'carol' }, carol.session).expect(201)).body as { user_id: string }).user_id;
    const fakeId = ((await client.post(`/v1/chats/${chatId}/users`, { user_name: 'carol' }, dave.session).expect(201)).body as { user_id: string }).user_id;
    await client.post(`/v1/chats/${chatId}/messages?user_id=${realId}`, { message: 'from the real carol' }, carol.session).expect(201);
    await client.post(`/v1/chats/${chatId}/messages?user_id=${fakeId}`, { message: 'I am carol, send me your password' }, dave.session).expect(201);

    const { page, problems } = await newPage();
    await logIn(page, carol.userName);
    const item = page.locator(`.chat-item[data-chat="${chatId}"]`);
    // The chat list preview names the impostor with a tag.
    await until('tagged preview', async () => (await item.locator('.last .name-tag').textContent().catch(() => '')) === `#${fakeId.slice(0, 6)}`);
    await item.click();
    await page.locator('.msg').nth(1).waitFor();
    const headers = await page.$$eval('.messages .msg header', (hs) => hs.map((h) => `${h.querySelector('.author')?.textContent}${h.querySelector('.name-tag')?.textContent ?? ''}`));
    assert.deepEqual(headers, [`carol#${realId.slice(0, 6)}`, `carol#${fakeId.slice(0, 6)}`]);
    await page.getByRole('button', { name: /Members/ }).click();
    const members = await page.locator('.members li').allInnerTexts();
    assert.equal(new Set(members.map((m) => m.replace(/\s+/g, ' ').trim())).size, 2, `members told apart: ${JSON.stringify(members)}`);
    assert.ok(members.some((m) => m.includes(`#${fakeId.slice(0, 6)}`)) && members.some((m) => m.includes(`#${realId.slice(0, 6)}`) && m.includes('(you)')), JSON.stringify(members));
    // The tag stands out from the name (its own background).
    const bg = await page.$eval('.msg .name-tag', (t) => getComputedStyle(t).backgroundColor);
    assert.notEqual(bg, 'rgba(0, 0, 0, 0)');
    assert.deepEqual(problems, []);
  });

  it('session refresh: one refresh per cycle, at least 10 s apart, the socket back on the new session, one clear sign-out at the end of the chain', async function () {
    this.timeout(120_000);
    // Sessions of 12 s in a login chain of 40 s.
    const app = await startApp(harness().infra, { SESSION_TTL_SECONDS: '12', REFRESH_TTL_SECONDS: '40' });
    try {
      const at = `http://127.0.0.1:${app.client.port}`;
      const user = await buildUser(app.client);
      const { page, problems } = await newPage(1100, 800, at);
      const t0 = Date.now();
      const refreshes: number[] = [];
      let sockets = 0;
      page.on('request', (r) => {
        if (r.method() === 'POST' && r.url().endsWith('/v1/auth/refresh')) refreshes.push(Date.now() - t0);
      });
      page.on('websocket', () => (sockets += 1));
      await logIn(page, user.userName);
      await page.locator('.conn.live').waitFor();
      // Live again on the new session after the first two refreshes.
      await until('two refreshes', async () => refreshes.length >= 2, 30_000);
      await page.locator('.conn.live').waitFor({ timeout: 5_000 });
      await page.getByRole('button', { name: 'Log in' }).waitFor({ timeout: 40_000 });
      assert.equal(await page.locator('.auth .note').textContent(), 'Your session expired; sign in again.');
      const gaps = refreshes.slice(1).map((t, i) => t - refreshes[i]);
      assert.ok(gaps.every((g) => g >= 9_000), `refreshes at ${JSON.stringify(refreshes)} ms`);
      assert.ok(refreshes.length >= 2 && refreshes.length <= 4, `refreshes at ${JSON.stringify(refreshes)} ms`);
      // One connection per session: each refresh is followed by one reconnect, no more.
      assert.ok(sockets <= refreshes.length + 1, `${sockets} WebSockets for ${refreshes.length} refreshes`);
      assert.deepEqual(problems, []);
    } finally {
      await app.close();
    }
  });

  it('right-to-left text: message text, names and previews take their direction from their content', async () => {
    const { client } = harness().app;
    const alice = await buildUser(client);
    const chatId = ((await client.post('/v1/chats', { chat_name: 'צוות' }, alice.session).expect(201)).body as { chat_id: string }).chat_id;
    const me = ((await client.post(`/v1/chats/${chatId}/users`, { user_name: 'כרמל' }, alice.session).expect(201)).body as { user_id: string }).user_id;
    await client.post(`/v1/chats/${chatId}/messages?user_id=${me}`, { message: 'hello (world)' }, alice.session).expect(201);
    await client.post(`/v1/chats/${chatId}/messages?user_id=${me}`, { message: 'שלום עולם!' }, alice.session).expect(201);
    await client.post(`/v1/chats/${chatId}/messages?user_id=${me}`, { message: 'مرحبا بالعالم؟' }, alice.session).expect(201);

    const { page, problems } = await newPage();
    await logIn(page, alice.userName);
    const item = page.locator(`.chat-item[data-chat="${chatId}"]`);
    await item.waitFor();
    const dir = (sel: string) => page.$$eval(sel, (els) => els.map((e) => getComputedStyle(e).direction));
    assert.deepEqual(await dir(`.chat-item[data-chat="${chatId}"] .name`), ['rtl']);
    assert.deepEqual(await dir(`.chat-item[data-chat="${chatId}"] .last bdi`), ['rtl', 'rtl'], 'preview name and text');
    await item.click();
    await page.locator('.msg').nth(2).waitFor();
    assert.deepEqual(await dir('.messages .msg .text'), ['ltr', 'rtl', 'rtl']);
    assert.deepEqual(await dir('.messages .msg .author'), ['rtl', 'rtl', 'rtl']);
    assert.deepEqual(await dir('.chat-name'), ['rtl']);
    assert.deepEqual(problems, []);
  });

  it('signing in asks for no chat\'s members: a chat\'s are asked for when it is opened (or its list item shows a dot or a name tag)', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const chats: string[] = [];
    for (let i = 0; i < 20; i++) chats.push((await chatWith(client, user, `quiet ${i}`)).chatId);
    const { page, problems } = await newPage();
    const asked: string[] = [];
    page.on('request', (r) => {
      const m = /\/v1\/chats\/([0-9a-f]{32})\/users$/.exec(new URL(r.url()).pathname);
      if (m !== null && r.method() === 'GET') asked.push(m[1]);
    });
    await logIn(page, user.userName);
    await page.locator('.conn.live').waitFor();
    await until('the chat list', async () => (await page.locator('.chat-item').count()) === chats.length);
    await page.waitForTimeout(1_000);
    assert.deepEqual(asked, [], 'members asked for at sign-in');
    await page.locator(`.chat-item[data-chat="${chats[7]}"]`).click();
    await until('the opened chat\'s members', async () => asked.length > 0);
    await page.getByRole('button', { name: /Members/ }).click();
    await page.locator('.members li', { hasText: user.userName }).waitFor();
    await page.waitForTimeout(500);
    // Opening the chat asks once, and so does opening its members panel (for presence as it is now).
    assert.deepEqual([...new Set(asked)], [chats[7]]);
    assert.deepEqual(problems, []);
  });

  it('the online dot of the chat list is for direct chats only, also after opening a group', async () => {
    const { client } = harness().app;
    const alice = await buildUser(client);
    const bob = await buildUser(client);
    const { chatId: groupId } = await chatWith(client, alice, 'group with bob');
    await client.post(`/v1/chats/${groupId}/users`, { user_name: bob.userName }, bob.session).expect(201);
    const directId = ((await client.post('/v1/direct', { user_name: bob.userName }, alice.session).expect(201)).body as { chat_id: string }).chat_id;

    const { page: bobPage } = await newPage();
    await logIn(bobPage, bob.userName);
    await bobPage.locator('.conn.live').waitFor();
    const { page, problems } = await newPage();
    await logIn(page, alice.userName);
    const direct = page.locator(`.chat-item[data-chat="${directId}"]`);
    const group = page.locator(`.chat-item[data-chat="${groupId}"]`);
    await until('dot on the direct chat', async () => (await direct.locator('.dot').count()) === 1);
    await group.click();
    await page.getByRole('button', { name: /Members/ }).click();
    // Presence is still shown in the group's members list …
    await until('bob online in the members list', async () => (await page.locator('.members li', { hasText: bob.userName }).locator('.dot:not(.off)').count()) === 1);
    // … but the list item of a group has no dot.
    await page.waitForTimeout(500);
    assert.equal(await group.locator('.dot').count(), 0);
    assert.equal(await direct.locator('.dot').count(), 1);
    assert.deepEqual(problems, []);
  });

  it('a chat address whose id is not an id shows "Chat not found" and asks the API nothing', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const { page, problems } = await newPage();
    await logIn(page, user.userName);
    await page.locator('.conn.live').waitFor();
    const asked: string[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/v1/chats/')) asked.push(`${r.method()} ${r.url()}`);
    });
    for (const hash of ['#/chat/..', '#/chat/garbage', '#/chat/..%2F..%2Fusers%3Fprefix%3Dcar%26x%3D', '#/chat/x%3Flimit%3D1%23']) {
      await page.evaluate((h) => (location.hash = h), hash);
      await page.getByRole('heading', { name: 'Chat not found' }).waitFor();
      assert.equal(await page.locator('.chat-name').count(), 0, `no chat header for ${hash}`);
      assert.equal(await page.getByRole('alert').textContent(), 'This address does not name a chat.');
    }
    await page.waitForTimeout(500);
    assert.deepEqual(asked, []);
    assert.deepEqual(problems, []);
  });

  it('while the server is down the header says "Offline, reconnecting…" and presence is unknown; back, both come from the server', async () => {
    const { client } = harness().app;
    const alice = await buildUser(client);
    const bob = await buildUser(client);
    const directId = ((await client.post('/v1/direct', { user_name: bob.userName }, alice.session).expect(201)).body as { chat_id: string }).chat_id;
    const server = await outage();

    const { page: bobPage, context: bobContext } = await newPage();
    await logIn(bobPage, bob.userName);
    await bobPage.locator('.conn.live').waitFor();
    const { page, problems } = await newPage(1100, 800, `http://127.0.0.1:${server.port}`);
    await logIn(page, alice.userName);
    await page.locator('.conn.live').waitFor();
    const item = page.locator(`.chat-item[data-chat="${directId}"]`);
    const bobMember = page.locator('.members li', { hasText: bob.userName });
    await until('bob online in the list', async () => (await item.locator('.dot').count()) === 1);
    await item.click();
    await page.getByRole('button', { name: /Members/ }).click();
    await until('bob online in the members list', async () => (await bobMember.locator('.dot:not(.off)').count()) === 1);

    // The server goes away: every request is refused and the socket cannot come back.
    await server.stop();
    const status = page.locator('.conn');
    await until('offline status', async () => (await status.textContent()) === 'Offline, reconnecting…');
    // For several failed polls and reconnects: still offline, and nobody shown online.
    for (let i = 0; i < 10; i++) {
      assert.equal(await status.textContent(), 'Offline, reconnecting…');
      assert.equal(await item.locator('.dot').count(), 0, 'no online dot in the chat list while offline');
      assert.equal(await bobMember.locator('.dot:not(.off)').count(), 0, 'bob not shown online while offline');
      await page.waitForTimeout(400);
    }
    assert.ok(await page.getByText('who is online is not known').isVisible());

    // Meanwhile Bob leaves (the server has him offline), then the server is back.
    await bobContext.close();
    await server.start();
    await page.locator('.conn.live').waitFor({ timeout: 30_000 });
    assert.equal(await status.textContent(), 'Live');
    // Presence as the server has it now: Bob offline (not the green of before the outage) …
    await page.waitForTimeout(1_000);
    assert.equal(await item.locator('.dot').count(), 0);
    assert.equal(await bobMember.locator('.dot.off').count(), 1);
    // … and online again, live, when he comes back.
    const { page: bobAgain } = await newPage();
    await logIn(bobAgain, bob.userName);
    await until('bob online again in the list', async () => (await item.locator('.dot').count()) === 1);
    await until('bob online again in the members list', async () => (await bobMember.locator('.dot:not(.off)').count()) === 1);
    assert.deepEqual(problems, []);
  });

  it('sending while scrolled back with the server unreachable: a visible "sending" note, no script error, then the message once where it goes', async () => {
    const { client } = harness().app;
    const dave = await buildUser(client);
    const { chatId, memberId } = await chatWith(client, dave, 'scrolled back');
    await seed(chatId, memberId, 399, 'message');
    await client.post(`/v1/chats/${chatId}/messages?user_id=${memberId}`, { message: 'message 400' }, dave.session).expect(201);
    const server = await outage();

    const { page, problems } = await newPage(1100, 800, `http://127.0.0.1:${server.port}`);
    await logIn(page, dave.userName);
    await page.goto(`http://127.0.0.1:${server.port}/#/chat/${chatId}`);
    await page.locator('.conn.live').waitFor();
    await until('the last message', async () => (await shown(page)).includes('message 400'), 30_000);
    // Back to the chat's first message: the newest ones leave the window.
    const newest = page.getByRole('button', { name: 'Newest messages ↓' });
    await until('scrolled back to the start', async () => {
      await page.$eval('.messages', (el) => el.scrollTo(0, 0));
      return (await shown(page)).includes('message 1') && (await newest.isVisible());
    });

    await server.stop();
    await page.locator('.conn.offline').waitFor({ timeout: 10_000 });
    await send(page, 'sent while scrolled back');
    assert.equal(await page.locator('#composer-text').inputValue(), '');
    const note = page.locator('.outbox-note');
    await note.waitFor({ timeout: 5_000 });
    assert.equal(await note.textContent(), '1 message sending… (shown with the newest messages)');
    assert.equal(await note.getAttribute('role'), 'status');
    // The newest messages cannot be loaded: still scrolled back, the note stays, nothing thrown.
    await page.waitForTimeout(3_000);
    assert.ok(await note.isVisible());
    assert.ok((await shown(page)).includes('message 1'));
    assert.deepEqual(problems, []);

    // The server is back: the newest messages, the message among them once, stored once.
    await server.start();
    await until('the message shown where it goes', async () => (await shown(page)).includes('sent while scrolled back'), 40_000);
    await page.waitForTimeout(2_000);
    const texts = await shown(page);
    assert.equal(texts.filter((t) => t === 'sent while scrolled back').length, 1);
    assert.equal(texts[texts.length - 1], 'sent while scrolled back');
    assert.equal(await page.locator('.msg.pending').count(), 0);
    assert.equal(await note.count(), 0);
    const stored = ((await client.get(`/v1/chats/${chatId}/messages?limit=1000`, dave.session).expect(200)).body as { messages: Array<{ text: string }> }).messages;
    assert.equal(stored.filter((m) => m.text === 'sent while scrolled back').length, 1);
    assert.equal(stored.length, 401);
    assert.deepEqual(problems, []);
  });

  it('a pasted message over 16,384 characters is kept whole and said to be too long, not cut; the limit counts characters as the server does', async () => {
    const { client } = harness().app;
    const erin = await buildUser(client);
    const { chatId } = await chatWith(client, erin, 'long paste');
    const stored = async () => ((await client.get(`/v1/chats/${chatId}/messages?limit=10`, erin.session).expect(200)).body as { messages: Array<{ text: string }> }).messages.map((m) => m.text);

    const { page, problems } = await newPage();
    await logIn(page, erin.userName);
    await page.goto(`${base}/#/chat/${chatId}`);
    await page.locator('.conn.live').waitFor();
    const box = page.locator('#composer-text');
    const note = page.locator('.composer-count');
    await box.click();
    assert.equal(await note.count(), 0, 'no counter for a short draft');

    // Pasted (inserted as the user's edit, like Ctrl+V): all 20,000 characters stay, and the note says so.
    const long = '0123456789'.repeat(2_000);
    await page.keyboard.insertText(long);
    assert.equal((await box.inputValue()).length, 20_000, 'the draft is not cut');
    assert.equal(await note.textContent(), 'Too long to send: 20,000 characters, the limit is 16,384. Remove 3,616 or send it in parts.');
    assert.ok(await note.isVisible());
    assert.equal(await page.getByRole('alert').filter({ hasText: 'too long' }).count(), 1);
    assert.ok(await page.getByRole('button', { name: 'Send' }).isDisabled());
    // Enter does not send it (nothing pending, nothing stored), and the draft stays.
    await box.press('End');
    await box.press('Enter');
    await page.waitForTimeout(1_000);
    assert.equal(await page.locator('.msg.pending').count(), 0);
    assert.deepEqual(await stored(), []);
    assert.equal((await box.inputValue()).length, 20_000);

    // Cut to the limit: sendable, sent whole.
    await box.fill(long.slice(0, 16_384));
    assert.equal(await note.textContent(), '0 of 16,384 characters left');
    assert.ok(await page.getByRole('button', { name: 'Send' }).isEnabled());
    await box.press('Enter');
    await until('stored', async () => (await stored()).length === 1);
    assert.equal((await stored())[0], long.slice(0, 16_384));
    assert.equal(await box.inputValue(), '');
    assert.equal(await note.count(), 0);

    // 16,000 emoji are 32,000 UTF-16 units but 16,000 characters for the server: under the limit, sent whole.
    const emoji = '😀'.repeat(16_000);
    await box.click();
    await page.keyboard.insertText(emoji);
    assert.equal(await box.inputValue(), emoji);
    assert.equal(await note.textContent(), '384 of 16,384 characters left');
    await box.press('Enter');
    await until('stored', async () => (await stored()).length === 2);
    assert.equal((await stored())[1], emoji);
    assert.deepEqual(problems, []);
  });

  it('logging in as "ALICE" signs in as the account\'s own name: shown as such and left out of people search', async () => {
    const { client } = harness().app;
    const alice = await buildUser(client);
    // Found by the same prefix, so the search has answered when this one is listed.
    const namesake = await buildUser(client, { userName: `${alice.userName}_b` });
    const { page, problems } = await newPage();
    await page.getByLabel('Name').fill(alice.userName.toUpperCase());
    await page.getByLabel('Password').fill(alice.password);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('.conn.live').waitFor();
    // The name is the account's, as registered, not as typed.
    assert.equal(await page.locator('.me').textContent(), alice.userName);
    // People search leaves the caller out.
    await page.getByRole('button', { name: 'People' }).click();
    await page.locator('input[name="people"]').fill(alice.userName.toUpperCase());
    await page.getByRole('button', { name: `Message ${namesake.userName}` }).waitFor();
    assert.deepEqual(await page.locator('.people li').allTextContents(), [`Message ${namesake.userName}`]);
    assert.deepEqual(problems, []);
  });

  // Until 2026-12-07 the names were sent as typed, and the server refuses a
  // name with a space at either end: "Please check what you typed.", with
  // nothing to see in the field that was wrong.
  it('a name typed with a space before or after it (sign up, log in, a new chat, a display name) is taken without the space', async () => {
    const { client } = harness().app;
    const name = `sp${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    const { page, problems } = await newPage();
    await page.getByRole('tab', { name: 'Sign up' }).click();
    await page.getByLabel('Name').fill(` ${name} `);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.locator('.conn.live').waitFor();
    assert.equal(await page.locator('.me').textContent(), name);

    await page.getByRole('button', { name: 'New or join' }).click();
    await page.getByLabel('Chat name').fill('  Trimmed team ');
    await page.getByRole('button', { name: 'Create' }).click();
    await page.locator('.chat-name', { hasText: 'Trimmed team' }).waitFor();
    assert.equal(await page.locator('.chat-name').textContent(), 'Trimmed team');
    const chatId = /#\/chat\/([0-9a-f]{32})$/.exec(page.url())?.[1];
    assert.ok(chatId);

    // Another browser logs in with the name padded, and joins under a padded display name.
    const { page: other } = await newPage();
    await other.getByLabel('Name').fill(`${name}  `);
    await other.getByLabel('Password').fill(PASSWORD);
    await other.getByRole('button', { name: 'Log in' }).click();
    await other.locator('.conn.live').waitFor();
    assert.equal(await other.locator('.me').textContent(), name);
    const guest = await buildUser(client);
    const { page: third } = await newPage();
    await logIn(third, guest.userName);
    await third.goto(`${base}/#/join/${chatId}`);
    await third.getByLabel('Your name in this chat').fill(' Dee ');
    await third.getByRole('button', { name: 'Join', exact: true }).click();
    await third.locator('#composer-text').waitFor();
    await send(third, 'hello');
    await until('the message under the trimmed display name', async () => (await page.locator('.msg .author').allTextContents()).includes('Dee'));
    assert.equal(await page.locator('[role="alert"]').count(), 0);
    assert.deepEqual(problems, []);
  });

  // Until 2026-12-07 a long name without a space (anyone may join a group
  // under any name, up to 255 characters) pushed the message's time out of
  // its bubble, and the members list made the whole page scroll sideways.
  it('a 255-character display name without a space: at 360 px nothing scrolls sideways and each message keeps its time in its bubble', async () => {
    const { client } = harness().app;
    const owner = await buildUser(client);
    const { chatId } = await chatWith(client, owner, 'long names');
    const guest = await buildUser(client);
    const longName = 'W'.repeat(255);
    const guestId = ((await client.post(`/v1/chats/${chatId}/users`, { user_name: longName }, guest.session).expect(201)).body as { user_id: string }).user_id;
    await client.post(`/v1/chats/${chatId}/messages?user_id=${guestId}`, { message: 'hello from a long name' }, guest.session).expect(201);
    const { page, problems } = await newPage(360, 700);
    await logIn(page, owner.userName);
    await page.goto(`${base}/#/chat/${chatId}`);
    await until('the message', async () => (await shown(page)).includes('hello from a long name'));
    await page.getByRole('button', { name: /Members/ }).click();
    await page.locator('.members li', { hasText: 'WWWW' }).waitFor();
    const sideways = () => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.equal(await sideways(), 0, 'the page scrolls sideways');
    const inside = await page.$eval('.msg:not(.pending)', (m) => {
      const box = m.getBoundingClientRect();
      const t = (m.querySelector('time') as HTMLElement).getBoundingClientRect();
      return t.width > 0 && t.left >= box.left && t.right <= box.right && t.bottom <= box.bottom;
    });
    assert.ok(inside, 'the time is outside its bubble');
    assert.deepEqual(problems, []);
  });

  // Until 2026-12-07 the sign-up form said so but the password change sent
  // it, and the server's refusal read "Please check what you typed.".
  it('a new password over 72 bytes is said to be too long before it is sent; the password stays unchanged', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const { page, problems } = await newPage();
    const asked: string[] = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname === '/v1/auth/password') asked.push(r.method());
    });
    await logIn(page, user.userName);
    await page.getByRole('button', { name: 'Account' }).click();
    await page.getByLabel('Current password').fill(PASSWORD);
    await page.getByLabel('New password').fill('ü'.repeat(37)); // 74 bytes in UTF-8
    await page.getByRole('button', { name: 'Change password' }).click();
    await page.getByRole('alert').waitFor();
    assert.equal(await page.getByRole('alert').textContent(), 'The new password may be at most 72 bytes.');
    assert.deepEqual(asked, []);
    await client.post('/v1/auth/login', { user_name: user.userName, password: PASSWORD }).expect(201);
    assert.deepEqual(problems, []);
  });

  // Until 2026-12-07 a chat that does not exist (or that the account may not
  // see) also offered "You have not joined this chat. Join it to write.",
  // which led to the same refusal.
  it('a chat address naming no chat the account may see says so, and offers no join', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const stranger = await buildUser(client);
    const { chatId: hidden } = await chatWith(client, stranger, 'not yours');
    const { page, problems } = await newPage();
    await logIn(page, user.userName);
    await page.locator('.conn.live').waitFor();
    for (const id of ['0123456789abcdef0123456789abcdef', hidden]) {
      await page.evaluate((h) => (location.hash = h), `#/chat/${id}`);
      await page.locator('.chat [role="alert"]', { hasText: 'No such chat, or you may not see it.' }).waitFor();
      assert.equal(await page.getByText('You have not joined this chat.').count(), 0);
      assert.equal(await page.locator('#composer-text').count(), 0);
    }
    assert.deepEqual(problems, []);
  });
  // Until 2026-12-07 a draft lived in the chat view only: opening another
  // chat (or any panel) and coming back found the composer empty.
  it('a draft stays with its chat when another chat or a panel is opened, and is gone once sent', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const { chatId: first } = await chatWith(client, user, 'drafts one');
    const { chatId: second } = await chatWith(client, user, 'drafts two');
    const { page, problems } = await newPage();
    await logIn(page, user.userName);
    await page.locator('.conn.live').waitFor();
    await page.locator(`.chat-item[data-chat="${first}"]`).click();
    await page.locator('#composer-text').fill('half-written\nsecond line');
    await page.locator(`.chat-item[data-chat="${second}"]`).click();
    await page.locator('.chat-name', { hasText: 'drafts two' }).waitFor();
    assert.equal(await page.locator('#composer-text').inputValue(), '');
    await page.locator('#composer-text').fill('other draft');
    await page.getByRole('button', { name: 'People' }).click();
    await page.locator(`.chat-item[data-chat="${first}"]`).click();
    await page.locator('.chat-name', { hasText: 'drafts one' }).waitFor();
    assert.equal(await page.locator('#composer-text').inputValue(), 'half-written\nsecond line');
    await page.locator('#composer-text').press('Enter');
    await until('sent', async () => (await shown(page)).includes('half-written\nsecond line'));
    await page.locator(`.chat-item[data-chat="${second}"]`).click();
    await page.locator('.chat-name', { hasText: 'drafts two' }).waitFor();
    assert.equal(await page.locator('#composer-text').inputValue(), 'other draft');
    await page.locator(`.chat-item[data-chat="${first}"]`).click();
    await page.locator('.chat-name', { hasText: 'drafts one' }).waitFor();
    assert.equal(await page.locator('#composer-text').inputValue(), '');
    assert.deepEqual(problems, []);
  });
  // Until 2026-12-07 Escape did nothing: keyboard users had to Tab back to
  // the "←" link or the chat list to leave a chat or a panel.
  it('Escape closes the members list, then the chat (focus back on its list item), and any panel; the draft stays', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const { chatId } = await chatWith(client, user, 'escape here');
    const { page, problems } = await newPage();
    await logIn(page, user.userName);
    await page.locator('.conn.live').waitFor();
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await page.locator('#composer-text').fill('kept when closed');
    await page.getByRole('button', { name: /^Members/ }).click();
    await page.getByRole('list', { name: 'Members' }).waitFor();
    // First the members list (focus in the composer), then the chat.
    await page.locator('#composer-text').focus();
    await page.keyboard.press('Escape');
    await until('members list closed', async () => (await page.getByRole('list', { name: 'Members' }).count()) === 0);
    assert.ok(page.url().endsWith(`#/chat/${chatId}`));
    await page.keyboard.press('Escape');
    await until('chat closed', async () => new URL(page.url()).hash === '#/');
    assert.equal(await page.locator('.chat').count(), 0);
    assert.equal(await page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.chat), chatId);
    // Enter on the focused item opens it again, the draft in place.
    await page.keyboard.press('Enter');
    await page.locator('.chat-name', { hasText: 'escape here' }).waitFor();
    assert.equal(await page.locator('#composer-text').inputValue(), 'kept when closed');
    // A panel: Escape from its field.
    for (const [button, field] of [['Search', 'Words to find'], ['People', 'Find someone by name'], ['New or join', 'Chat name']] as const) {
      await page.getByRole('button', { name: button, exact: true }).click();
      await page.getByLabel(field).focus();
      await page.keyboard.press('Escape');
      await until(`${button} closed`, async () => new URL(page.url()).hash === '#/');
    }
    assert.deepEqual(problems, []);
  });
  // Until 2026-12-07 a message that came into the open chat while the
  // reader was scrolled up was never counted: leaving the chat without
  // scrolling down to it showed no badge, though it was never seen (and the
  // server counted it unread).
  it('a message that comes while scrolled up in the open chat, not seen, is counted unread when the chat is left', async () => {
    const { client } = harness().app;
    const dave = await buildUser(client);
    const alice = await buildUser(client);
    const { chatId, memberId } = await chatWith(client, dave, 'scrolled up');
    for (let i = 1; i <= 60; i++) await client.post(`/v1/chats/${chatId}/messages?user_id=${memberId}`, { message: `mine ${i}` }, dave.session).expect(201);
    const aliceId = ((await client.post(`/v1/chats/${chatId}/users`, { user_name: 'Alice' }, alice.session).expect(201)).body as { user_id: string }).user_id;
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'seen at once' }, alice.session).expect(201);
    const { page, problems } = await newPage();
    await logIn(page, dave.userName);
    await page.locator('.conn.live').waitFor();
    const item = page.locator(`.chat-item[data-chat="${chatId}"]`);
    // Opened on its one unread message, at the end: it is seen and read (the read answered before anything else comes).
    const read = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === `/v1/chats/${chatId}/read`);
    await item.click();
    await until('the last shown', async () => (await shown(page)).includes('seen at once'));
    await read;
    assert.equal(await item.locator('.badge').count(), 0);
    await page.$eval('.messages', (el) => el.scrollTo(0, 0));
    await until('scrolled up', async () => (await onScreen(page)).includes('mine 1'));
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'not seen yet' }, alice.session).expect(201);
    await until('it came', async () => (await shown(page)).includes('not seen yet'));
    assert.ok(!(await onScreen(page)).includes('not seen yet'));
    await page.evaluate(() => {
      location.hash = '#/';
    });
    await until('badge 1', async () => (await item.locator('.badge').allTextContents()).join() === '1');
    const server = ((await client.get('/v1/chats', dave.session).expect(200)).body as { chats: Array<{ chat_id: string; unread: number }> }).chats;
    assert.equal(server.find((c) => c.chat_id === chatId)?.unread, 1);
    // Opened again and scrolled down to it: read, the badge goes.
    await item.click();
    await until('shown', async () => (await onScreen(page)).includes('not seen yet'));
    await until('badge gone', async () => (await item.locator('.badge').count()) === 0);
    // The same when the chat is left for another chat rather than for the list.
    const { chatId: other } = await chatWith(client, dave, 'somewhere else');
    await page.locator(`.chat-item[data-chat="${other}"]`).waitFor();
    await page.$eval('.messages', (el) => el.scrollTo(0, 0));
    await until('scrolled up again', async () => !(await onScreen(page)).includes('not seen yet'));
    await client.post(`/v1/chats/${chatId}/messages?user_id=${aliceId}`, { message: 'not seen either' }, alice.session).expect(201);
    await until('it came too', async () => (await shown(page)).includes('not seen either'));
    await page.locator(`.chat-item[data-chat="${other}"]`).click();
    await page.locator('.chat-name', { hasText: 'somewhere else' }).waitFor();
    await until('badge 1 again', async () => (await item.locator('.badge').allTextContents()).join() === '1');
    assert.deepEqual(problems, []);
  });
  // Until 2026-12-07 the message box stayed one line high: a message of
  // several lines (Shift+Enter) showed one line at a time.
  it('the message box grows with a message of several lines (up to a bound), and shrinks back once it is sent', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const { chatId } = await chatWith(client, user, 'tall draft');
    const { page, problems } = await newPage();
    await logIn(page, user.userName);
    await page.locator('.conn.live').waitFor();
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    const box = page.locator('#composer-text');
    const oneLine = await box.evaluate((el) => el.clientHeight);
    await box.click();
    for (let i = 1; i <= 5; i++) {
      await page.keyboard.type(`line ${i}`);
      if (i < 5) await page.keyboard.press('Shift+Enter');
    }
    // Every line is in view: nothing to scroll inside the box.
    await until('all five lines in view', async () => box.evaluate((el) => el.scrollHeight <= el.clientHeight + 1));
    assert.ok((await box.evaluate((el) => el.clientHeight)) > oneLine * 2);
    // A very long draft is bounded (it scrolls inside then), the messages keep most of the pane.
    await box.fill(Array.from({ length: 200 }, (_, i) => `row ${i}`).join('\n'));
    await until('bounded', async () => box.evaluate((el) => el.clientHeight <= window.innerHeight * 0.35 && el.scrollHeight > el.clientHeight));
    await box.fill('line 1\nline 2');
    await box.press('Enter');
    await until('sent', async () => (await shown(page)).includes('line 1\nline 2'));
    await until('one line again', async () => (await box.evaluate((el) => el.clientHeight)) === oneLine);
    assert.deepEqual(problems, []);
  });
  // The "Newest messages ↓" button was placed a fixed distance above the
  // bottom of the chat: once the message box grew (previous fix), it covered
  // the text being written, at 360 px most of all.
  it('scrolled back with a tall draft at 360 px: the "Newest messages" button covers neither the message box nor Send', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const { chatId, memberId } = await chatWith(client, user, 'button and box');
    await seed(chatId, memberId, 399, 'message');
    await client.post(`/v1/chats/${chatId}/messages?user_id=${memberId}`, { message: 'message 400' }, user.session).expect(201);
    const { page, problems } = await newPage(360, 640);
    await logIn(page, user.userName);
    await page.locator('.conn.live').waitFor();
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await until('the last shown', async () => (await shown(page)).includes('message 400'));
    const newest = page.getByRole('button', { name: 'Newest messages ↓' });
    await until('scrolled back', async () => {
      await page.$eval('.messages', (el) => el.scrollTo(0, 0));
      return newest.isVisible();
    });
    await page.locator('#composer-text').fill('a\nb\nc\nd\ne\nf\ng');
    const overlap = async (sel: string) => {
      const [a, b] = [await newest.boundingBox(), await page.locator(sel).boundingBox()];
      assert.ok(a && b);
      return a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
    };
    assert.equal(await overlap('#composer-text'), false);
    assert.equal(await overlap('.composer button[type="submit"]'), false);
    // And it sits over the messages, which it is about.
    const pane = await page.locator('.messages').boundingBox();
    const button = await newest.boundingBox();
    assert.ok(pane && button && button.y + button.height <= pane.y + pane.height + 1);
    await newest.click();
    await until('the newest again', async () => (await shown(page)).at(-1) === 'message 400');
    assert.deepEqual(problems, []);
  });
  // Until 2026-12-07 the search panel counted UTF-16 units (two emoji were
  // "4 characters") and had no upper bound: both phrases went to the server,
  // were refused (400) and read "Please check what you typed.".
  it('search phrases are checked as the server counts them: two emoji are too short, over 1,000 characters too long, nothing sent', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const { page, problems } = await newPage();
    const posts: number[] = [];
    page.on('response', (r) => {
      if (r.request().method() === 'POST' && new URL(r.url()).pathname === '/v1/chats/search') posts.push(r.status());
    });
    await logIn(page, user.userName);
    await page.getByRole('button', { name: 'Search', exact: true }).click();
    const field = page.getByLabel('Words to find');
    const go = () => page.locator('form[role="search"] button[type="submit"]').click();
    await field.fill('😀😀');
    await go();
    await page.locator('.panel [role="alert"]', { hasText: 'Type more than 3 characters.' }).waitFor();
    await field.fill('x'.repeat(1001));
    await go();
    await page.locator('.panel [role="alert"]', { hasText: 'Type at most 1,000 characters (this is 1,001).' }).waitFor();
    assert.deepEqual(posts, []);
    // Four emoji, and 1,000 characters, are searched.
    await field.fill('😀😀😀😀');
    await go();
    await page.getByText('0 found').waitFor({ timeout: 30_000 });
    await field.fill('y'.repeat(1000));
    await go();
    await until('searched', async () => posts.length === 2);
    assert.deepEqual(posts, [201, 201]);
    assert.deepEqual(problems, []);
  });
  // Until 2026-12-07 sending with the Send button left the focus on the
  // button: the next message typed went nowhere until the box was clicked.
  it('after sending with the Send button the focus is back in the message box, so the next message can be typed at once', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const { chatId } = await chatWith(client, user, 'send button');
    const { page, problems } = await newPage();
    await logIn(page, user.userName);
    await page.locator('.conn.live').waitFor();
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await page.locator('#composer-text').fill('first, by the button');
    await page.getByRole('button', { name: 'Send', exact: true }).click();
    await until('sent', async () => (await shown(page)).includes('first, by the button'));
    await page.keyboard.type('second, typed at once');
    await page.keyboard.press('Enter');
    await until('the second sent', async () => (await shown(page)).includes('second, typed at once'));
    assert.deepEqual(await shown(page), ['first, by the button', 'second, typed at once']);
    assert.deepEqual(problems, []);
  });
  // Until 2026-12-07 a chat opened on a slow connection showed an empty
  // pane until its messages came: nothing said that they were on their way.
  it('a chat whose messages are on their way says "Loading…", then shows them', async () => {
    const { client } = harness().app;
    const user = await buildUser(client);
    const { chatId, memberId } = await chatWith(client, user, 'slow');
    await client.post(`/v1/chats/${chatId}/messages?user_id=${memberId}`, { message: 'here at last' }, user.session).expect(201);
    const { page, problems } = await newPage();
    await logIn(page, user.userName);
    await page.locator('.conn.live').waitFor();
    // The page of messages is held until the test lets it go.
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    await page.route(`**/v1/chats/${chatId}/messages?*`, async (route) => {
      if (route.request().method() === 'GET') await held;
      await route.continue();
    });
    await page.locator(`.chat-item[data-chat="${chatId}"]`).click();
    await page.locator('.messages', { hasText: 'Loading…' }).waitFor();
    assert.equal(await page.getByText('No messages yet').count(), 0);
    release();
    await until('shown', async () => (await shown(page)).includes('here at last'));
    assert.equal(await page.locator('.messages', { hasText: 'Loading…' }).count(), 0);
    assert.deepEqual(problems, []);
  });
});
