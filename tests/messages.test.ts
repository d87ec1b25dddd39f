import assert from 'node:assert/strict';
import { harness } from './helpers/harness';
import { buildChat, buildUser, getPage, joinChat, postMessage, type Page, badParameters } from './helpers/factories';

const ZERO = '0'.repeat(32);

async function chatWithMember() {
  const { client } = harness().app;
  const u = await buildUser(client);
  const chatId = await buildChat(client, u.session);
  const userId = await joinChat(client, chatId, u.session, 'Alice');
  return { client, u, chatId, userId };
}

async function messageCount(chatId: string): Promise<number> {
  const [{ count }] = await harness().infra.db('messages').where('chat_id', chatId).count<{ count: string }[]>('* as count');
  return Number(count);
}

describe('POST /v1/chats/{chat_id}/messages', () => {
  it('returns 201 with a message_id and stores the text exactly as sent', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    const texts = ['hello', 'Привет, мир', '👋🏽 emoji ﷽', "'; DROP TABLE messages; --", '<script>alert(1)</script>', '  spaces  \n\ttabs ', '\\u0000 is not a NUL'];
    for (const text of texts) {
      const id = await postMessage(client, chatId, userId, text, u.session);
      assert.match(id, /^[0-9a-f]{32}$/);
      const row = await harness().infra.db('messages').where('id', id).first('text');
      assert.equal(row.text, text);
    }
    const page = await getPage(client, chatId, u.session, 100);
    assert.deepEqual(page.messages.map((m) => m.text), texts);
  });

  it('accepts a message of exactly MESSAGE_MAX_LENGTH characters, counting an emoji as one', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    // The default MESSAGE_MAX_LENGTH (16384), in astral characters, then in ASCII: each stored and returned whole.
    const texts = ['😀'.repeat(16384), 'x'.repeat(16383) + 'é'];
    const ids: string[] = [];
    for (const text of texts) ids.push(await postMessage(client, chatId, userId, text, u.session));
    const page = await getPage(client, chatId, u.session, 10);
    assert.deepEqual(page.messages.map((m) => m.message_id), ids);
    for (const [i, m] of page.messages.entries()) {
      assert.equal([...m.text].length, 16384);
      assert.equal(m.text, texts[i]);
      const row = await harness().infra.db('messages').where('id', m.message_id).first('text');
      assert.equal(row.text, texts[i]);
    }
  });

  it('returns 400 bad-parameters for a message over MESSAGE_MAX_LENGTH, its detail naming the limit, and stores nothing', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    const res = await client.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, { message: 'x'.repeat(16385) }, u.session).expect(400).expect(badParameters);
    // The limit is the server's setting: the detail is how a client learns it (as for every other refused field).
    assert.equal((res.body as { detail?: string }).detail, 'message: a message that is not only whitespace, of at most 16384 characters');
    assert.equal(await messageCount(chatId), 0);
  });

  const bad: [string, unknown][] = [
    ['an empty message', { message: '' }],
    ['a missing message', {}],
    ['a boolean message', { message: false }],
    ['a NUL in the message', { message: 'a\u0000b' }],
    ['a lone surrogate', { message: '\udc00' }],
  ];
  for (const [what, body] of bad) {
    it(`returns 400 bad-parameters for ${what} and stores nothing`, async () => {
      const { client, u, chatId, userId } = await chatWithMember();
      await client.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, body as object, u.session).expect(400).expect(badParameters);
      assert.equal(await messageCount(chatId), 0);
    });
  }

  it('accepts a JSON number as the message text', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    await client.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, { message: 3.5 }, u.session).expect(201);
    const page = await getPage(client, chatId, u.session, 10);
    assert.equal(page.messages[0].text, '3.5');
  });

  it('returns 400 bad-parameters without user_id', async () => {
    const { client, u, chatId } = await chatWithMember();
    await client.post(`/v1/chats/${chatId}/messages`, { message: 'x' }, u.session).expect(400).expect(badParameters);
  });

  it('returns 404 user-not-found for a user_id of another account, and stores nothing', async () => {
    const { client, chatId, userId } = await chatWithMember();
    const intruder = await buildUser(client);
    await joinChat(client, chatId, intruder.session, 'Mallory');
    await client.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, { message: 'as Alice' }, intruder.session).expect(404, { message: 'user-not-found' });
    assert.equal(await messageCount(chatId), 0);
  });

  it('returns 404 chat-not-found to an account that may not read the chat, whatever user_id it sends, as for a chat that does not exist', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    const stranger = await buildUser(client);
    const other = await buildUser(client);
    const direct = (await client.post('/v1/direct', { user_name: other.userName }, u.session).expect(201)).body as { chat_id: string; user_id: string };
    // Neither its creator nor a member: the chat's existence is not told (before: 404 user-not-found here, chat-not-found for a made-up id).
    for (const [chat, member] of [[chatId, userId], [chatId, 'b'.repeat(32)], [direct.chat_id, direct.user_id], ['f'.repeat(32), userId]]) {
      await client.post(`/v1/chats/${chat}/messages?user_id=${member}`, { message: 'x' }, stranger.session).expect(404, { message: 'chat-not-found' });
    }
    assert.equal(await messageCount(chatId), 0);
    assert.equal(await messageCount(direct.chat_id), 0);
    // The creator may read the chat before joining: a user_id that is not its own there is still user-not-found.
    const own = await buildChat(client, stranger.session);
    await client.post(`/v1/chats/${own}/messages?user_id=${userId}`, { message: 'x' }, stranger.session).expect(404, { message: 'user-not-found' });
  });

  it('returns 404 user-not-found for a user_id of another chat, unknown or malformed', async () => {
    const { client, u, chatId } = await chatWithMember();
    const otherChat = await buildChat(client, u.session);
    const otherMember = await joinChat(client, otherChat, u.session);
    for (const id of [otherMember, 'b'.repeat(32), 'not-an-id']) {
      await client.post(`/v1/chats/${chatId}/messages?user_id=${id}`, { message: 'x' }, u.session).expect(404, { message: 'user-not-found' });
    }
    assert.equal(await messageCount(chatId), 0);
  });

  it('returns 404 chat-not-found for an unknown or malformed chat', async () => {
    const { client, u, userId } = await chatWithMember();
    await client.post(`/v1/chats/${'c'.repeat(32)}/messages?user_id=${userId}`, { message: 'x' }, u.session).expect(404, { message: 'chat-not-found' });
    await client.post(`/v1/chats/zzz/messages?user_id=${userId}`, { message: 'x' }, u.session).expect(404, { message: 'chat-not-found' });
  });
});

describe('GET /v1/chats/{chat_id}/messages', () => {
  it('returns messages oldest first with every field, and next pointing at the last one', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    const ids = [];
    for (const t of ['one', 'two', 'three']) ids.push(await postMessage(client, chatId, userId, t, u.session));
    const page = await getPage(client, chatId, u.session, 10);
    assert.deepEqual(page.messages.map((m) => m.message_id), ids);
    const first = page.messages[0];
    assert.equal(first.user_id, userId);
    assert.equal(first.user_name, 'Alice');
    assert.equal(first.text, 'one');
    assert.ok(!Number.isNaN(Date.parse(first.created_at)));
    assert.equal(page.next.iterator, ids[2]);
  });

  it('answers texts past ASCII, quotes and control characters exactly, in compact JSON, with the stored time to the millisecond', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    const text = 'line\nnext\ttab \u0001 \u001f "quoted" \\ back / slash — Ж 🎉 \u2028';
    const id = await postMessage(client, chatId, userId, text, u.session);
    const res = await client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200).expect('Content-Type', /^application\/json/);
    assert.equal(res.text, JSON.stringify(res.body));
    const [m] = (res.body as Page).messages;
    assert.equal(m.text, text);
    const row = (await harness().infra.db('messages').where({ id }).first('created_at')) as { created_at: Date };
    assert.equal(m.created_at, row.created_at.toISOString());
  });

  it('pages with limit and from without skipping or repeating', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push(await postMessage(client, chatId, userId, `m${i}`, u.session));
    const seen: string[] = [];
    let from: string | undefined;
    for (;;) {
      const page: Page = await getPage(client, chatId, u.session, 3, from);
      if (page.messages.length === 0) {
        assert.equal(page.next.iterator, from, 'an empty page repeats the cursor it was given');
        break;
      }
      seen.push(...page.messages.map((m) => m.message_id));
      from = page.next.iterator;
    }
    assert.deepEqual(seen, ids);
  });

  it('on an empty chat returns no messages and the all-zero iterator', async () => {
    const { client, u, chatId } = await chatWithMember();
    const page = await getPage(client, chatId, u.session, 10);
    assert.deepEqual(page, { messages: [], next: { iterator: ZERO } });
  });

  it('treats from=<all zeros> as the start', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    const id = await postMessage(client, chatId, userId, 'first', u.session);
    const page = await getPage(client, chatId, u.session, 10, ZERO);
    assert.deepEqual(page.messages.map((m) => m.message_id), [id]);
  });

  it('following next later returns the messages written since (polling)', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    await postMessage(client, chatId, userId, 'a', u.session);
    const p1 = await getPage(client, chatId, u.session, 10);
    const idle = await getPage(client, chatId, u.session, 10, p1.next.iterator);
    assert.deepEqual(idle.messages, []);
    assert.equal(idle.next.iterator, p1.next.iterator);
    const b = await postMessage(client, chatId, userId, 'b', u.session);
    const p2 = await getPage(client, chatId, u.session, 10, idle.next.iterator);
    assert.deepEqual(p2.messages.map((m) => m.message_id), [b]);
  });

  it('lets the creator read without joining, and every member read', async () => {
    const { client } = harness().app;
    const owner = await buildUser(client);
    const member = await buildUser(client);
    const chatId = await buildChat(client, owner.session);
    const memberId = await joinChat(client, chatId, member.session);
    await postMessage(client, chatId, memberId, 'hi', member.session);
    assert.equal((await getPage(client, chatId, owner.session, 10)).messages.length, 1);
    assert.equal((await getPage(client, chatId, member.session, 10)).messages.length, 1);
  });

  it('answers 404 chat-not-found to an account that is neither creator nor member', async () => {
    const { client, chatId } = await chatWithMember();
    const stranger = await buildUser(client);
    await client.get(`/v1/chats/${chatId}/messages?limit=10`, stranger.session).expect(404, { message: 'chat-not-found' });
  });

  it('answers 404 chat-not-found for an unknown or malformed chat', async () => {
    const { client, u } = await chatWithMember();
    await client.get(`/v1/chats/${'d'.repeat(32)}/messages?limit=10`, u.session).expect(404, { message: 'chat-not-found' });
    await client.get(`/v1/chats/xyz/messages?limit=10`, u.session).expect(404, { message: 'chat-not-found' });
  });

  for (const limit of [undefined, '0', '1001', 'abc', '1.5', '-1', '']) {
    it(`answers 400 bad-parameters for limit=${String(limit)}`, async () => {
      const { client, u, chatId } = await chatWithMember();
      const q = limit === undefined ? '' : `?limit=${limit}`;
      await client.get(`/v1/chats/${chatId}/messages${q}`, u.session).expect(400).expect(badParameters);
    });
  }

  it('limit=1 and limit=1000 on a chat of 1,001 messages return exactly 1 and 1000, oldest first, and next reaches the rest', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    // 1,001 messages written straight into the tables, as 1,001 posts would have left them.
    const db = harness().infra.db;
    const member = await db('chat_members').where({ id: userId }).first('id');
    await db.raw(
      `INSERT INTO messages (chat_id, member_id, seq, text) SELECT ?::uuid, ?::uuid, g, 'm' || g FROM generate_series(1, 1001) AS g`,
      [chatId, member.id],
    );
    await db('chats').where('id', chatId).update({ last_seq: 1001 });
    const one = await getPage(client, chatId, u.session, 1);
    assert.deepEqual(one.messages.map((m) => m.text), ['m1']);
    assert.equal(one.next.iterator, one.messages[0].message_id);
    const second = await getPage(client, chatId, u.session, 1, one.next.iterator);
    assert.deepEqual(second.messages.map((m) => m.text), ['m2']);
    const big = await getPage(client, chatId, u.session, 1000);
    assert.equal(big.messages.length, 1000);
    assert.deepEqual(big.messages.map((m) => m.text), Array.from({ length: 1000 }, (_, i) => `m${i + 1}`));
    assert.ok(big.messages.every((m) => m.user_id === userId && m.user_name === 'Alice'));
    assert.equal(big.next.iterator, big.messages[999].message_id);
    const rest = await getPage(client, chatId, u.session, 1000, big.next.iterator);
    assert.deepEqual(rest.messages.map((m) => m.text), ['m1001']);
  });

  it('answers 400 bad-cursor for a message of another chat, an unknown id, or a malformed cursor', async () => {
    const { client, u, chatId, userId } = await chatWithMember();
    const otherChat = await buildChat(client, u.session);
    const otherMember = await joinChat(client, otherChat, u.session);
    const foreign = await postMessage(client, otherChat, otherMember, 'elsewhere', u.session);
    await postMessage(client, chatId, userId, 'here', u.session);
    for (const from of [foreign, 'e'.repeat(32), 'garbage']) {
      await client.get(`/v1/chats/${chatId}/messages?limit=10&from=${from}`, u.session).expect(400, { message: 'bad-cursor' });
    }
  });

  it('never skips or repeats a message while several writers post and a reader tails', async function () {
    this.timeout(60_000);
    const { client } = harness().app;
    const owner = await buildUser(client);
    const chatId = await buildChat(client, owner.session);
    const writers = await Promise.all(
      Array.from({ length: 4 }, async (_, i) => {
        const w = await buildUser(client);
        return { session: w.session, userId: await joinChat(client, chatId, w.session, `writer${i}`) };
      }),
    );
    const perWriter = 15;
    const written: string[] = [];
    let writing = true;
    const writes = Promise.all(
      writers.map(async (w, i) => {
        for (let n = 0; n < perWriter; n++) written.push(await postMessage(client, chatId, w.userId, `w${i}-${n}`, w.session));
      }),
    ).finally(() => {
      writing = false;
    });
    const seen: string[] = [];
    let from: string | undefined;
    const tail = async () => {
      for (;;) {
        const done = !writing;
        const page = await getPage(client, chatId, owner.session, 5, from);
        seen.push(...page.messages.map((m) => m.message_id));
        from = page.next.iterator;
        if (done && page.messages.length === 0) return;
      }
    };
    await Promise.all([writes, tail()]);
    assert.equal(new Set(seen).size, seen.length, 'a message was repeated');
    assert.equal(seen.length, writers.length * perWriter, 'a message was skipped');
    assert.deepEqual(new Set(seen), new Set(written));
    const all = await getPage(client, chatId, owner.session, 1000);
    assert.deepEqual(seen, all.messages.map((m) => m.message_id), 'tailing order differs from the final order');
    // Each writer's own messages appear in the order it wrote them.
    for (let i = 0; i < writers.length; i++) {
      const mine = all.messages.filter((m) => m.user_name === `writer${i}`).map((m) => m.text);
      assert.deepEqual(mine, Array.from({ length: perWriter }, (_, n) => `w${i}-${n}`));
    }
  });
});
