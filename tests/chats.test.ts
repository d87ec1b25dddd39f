import assert from 'node:assert/strict';
import { harness } from './helpers/harness';
import { buildChat, buildUser, getPage, joinChat, postMessage, uniq, badParameters } from './helpers/factories';

describe('POST /v1/chats', () => {
  it('returns 201 with a 32-hex chat_id and stores the chat with its creator', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const name = uniq('chat');
    const res = await client.post('/v1/chats', { chat_name: name }, u.session).expect(201);
    const chatId = (res.body as { chat_id: string }).chat_id;
    assert.match(chatId, /^[0-9a-f]{32}$/);
    const row = await harness().infra.db('chats as c').join('users as u', 'u.id', 'c.owner_id').where('c.id', chatId).first('c.chat_name', 'u.user_name');
    assert.deepEqual(row, { chat_name: name, user_name: u.userName });
  });

  it('accepts a JSON number as chat_name and stores its decimal text', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const res = await client.post('/v1/chats', { chat_name: 123 }, u.session).expect(201);
    const row = await harness().infra.db('chats').where('id', (res.body as { chat_id: string }).chat_id).first('chat_name');
    assert.equal(row.chat_name, '123');
  });

  it('ignores unknown extra fields', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const res = await client.post('/v1/chats', { chat_name: 'x', color: 'blue', nested: { a: 1 } }, u.session).expect(201);
    assert.deepEqual(Object.keys(res.body as object), ['chat_id']);
    const row = await harness().infra.db('chats').where('id', (res.body as { chat_id: string }).chat_id).first('chat_name');
    assert.equal(row.chat_name, 'x');
  });

  it('stores a 255-character name exactly', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const name = 'ä'.repeat(255);
    const res = await client.post('/v1/chats', { chat_name: name }, u.session).expect(201);
    const row = await harness().infra.db('chats').where('id', (res.body as { chat_id: string }).chat_id).first('chat_name');
    assert.equal(row.chat_name, name);
  });

  const bad: [string, unknown][] = [
    ['an empty name', { chat_name: '' }],
    ['a name over 255 characters', { chat_name: 'x'.repeat(256) }],
    ['a missing name', {}],
    ['a boolean name', { chat_name: true }],
    ['an object name', { chat_name: { a: 1 } }],
    ['a NUL in the name', { chat_name: 'a\u0000b' }],
    ['a lone surrogate in the name', { chat_name: 'a\ud800b' }],
  ];
  for (const [what, body] of bad) {
    it(`returns 400 bad-parameters for ${what} and creates no chat`, async () => {
      const { client } = harness().app;
      const u = await buildUser(client);
      await client.post('/v1/chats', body as object, u.session).expect(400).expect(badParameters);
      const [{ count }] = await harness().infra.db('chats as c').join('users as u', 'u.id', 'c.owner_id').where('u.user_name', u.userName).count<{ count: string }[]>('* as count');
      assert.equal(Number(count), 0);
    });
  }

  it('returns 400 bad-parameters for malformed JSON', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    await client.post('/v1/chats', '{"chat_name": ', u.session).expect(400).expect(badParameters);
  });
});

describe('POST /v1/chats/{chat_id}/users', () => {
  it('returns 201 with a user_id, and the same user_id when the account joins again', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const first = await joinChat(client, chatId, u.session, 'Alice');
    assert.match(first, /^[0-9a-f]{32}$/);
    const again = await joinChat(client, chatId, u.session, 'Alice again');
    assert.equal(again, first);
    const rows = await harness().infra.db('chat_members').where('chat_id', chatId);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].user_name, 'Alice', 'the first name is kept');
  });

  it('gives two accounts with the same display name two different user_ids', async () => {
    const { client } = harness().app;
    const a = await buildUser(client);
    const b = await buildUser(client);
    const chatId = await buildChat(client, a.session);
    const ua = await joinChat(client, chatId, a.session, 'Sam');
    const ub = await joinChat(client, chatId, b.session, 'Sam');
    assert.notEqual(ua, ub);
  });

  it('lets any account that knows the chat_id join it', async () => {
    const { client } = harness().app;
    const owner = await buildUser(client);
    const guest = await buildUser(client);
    const chatId = await buildChat(client, owner.session);
    const guestId = await joinChat(client, chatId, guest.session, 'guest');
    // The guest is a member now: it may post under that user_id and read the chat back.
    const posted = await postMessage(client, chatId, guestId, 'hello from the guest', guest.session);
    const page = await getPage(client, chatId, guest.session, 10);
    assert.deepEqual(page.messages.map((m) => [m.message_id, m.user_id, m.user_name, m.text]), [[posted, guestId, 'guest', 'hello from the guest']]);
  });

  it('accepts the dashed form of chat_id', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const c = await buildChat(client, u.session);
    const dashed = `${c.slice(0, 8)}-${c.slice(8, 12)}-${c.slice(12, 16)}-${c.slice(16, 20)}-${c.slice(20)}`;
    const res = await client.post(`/v1/chats/${dashed}/users`, { user_name: 'x' }, u.session).expect(201);
    const userId = (res.body as { user_id: string }).user_id;
    assert.match(userId, /^[0-9a-f]{32}$/);
    // The same chat as the plain form names: the member posts there under that id.
    await postMessage(client, c, userId, 'via dashed', u.session);
    const page = await getPage(client, c, u.session, 10);
    assert.deepEqual(page.messages.map((m) => [m.user_id, m.user_name, m.text]), [[userId, 'x', 'via dashed']]);
  });

  it('returns 404 chat-not-found for an unknown chat and stores nothing', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const unknown = 'a'.repeat(32);
    await client.post(`/v1/chats/${unknown}/users`, { user_name: 'x' }, u.session).expect(404, { message: 'chat-not-found' });
    const rows = await harness().infra.db('chat_members').where('chat_id', unknown);
    assert.equal(rows.length, 0);
  });

  it('returns 404 chat-not-found for a malformed chat id', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    for (const bad of ['nope', '1234', 'g'.repeat(32), `${'a'.repeat(32)}0`, "1' OR '1'='1"]) {
      await client.post(`/v1/chats/${encodeURIComponent(bad)}/users`, { user_name: 'x' }, u.session).expect(404, { message: 'chat-not-found' });
    }
  });

  it('returns 400 bad-parameters for an empty or over-long user_name', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    await client.post(`/v1/chats/${chatId}/users`, { user_name: '' }, u.session).expect(400).expect(badParameters);
    await client.post(`/v1/chats/${chatId}/users`, { user_name: 'x'.repeat(256) }, u.session).expect(400).expect(badParameters);
    await client.post(`/v1/chats/${chatId}/users`, {}, u.session).expect(400).expect(badParameters);
    const rows = await harness().infra.db('chat_members').where('chat_id', chatId);
    assert.equal(rows.length, 0);
  });

  it('accepts a JSON number as user_name', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    await client.post(`/v1/chats/${chatId}/users`, { user_name: 42 }, u.session).expect(201);
    const rows = await harness().infra.db('chat_members').where('chat_id', chatId);
    assert.equal(rows[0].user_name, '42');
  });

  it('concurrent joins of one account return one user_id', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const ids = await Promise.all(Array.from({ length: 8 }, () => joinChat(client, chatId, u.session, 'same')));
    assert.equal(new Set(ids).size, 1);
  });
});
