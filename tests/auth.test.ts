import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { loadConfig } from '../messenger/config';
import { harness, startApp } from './helpers/harness';
import { buildUser, uniq, badParameters } from './helpers/factories';
import { waitUntil } from './helpers/wait';

function sessionKey(token: string): string {
  return `session:${createHash('sha256').update(Buffer.from(token, 'hex')).digest('hex')}`;
}

describe('POST /v1/auth/register', () => {
  it('returns 201 and stores only a bcrypt hash of the password', async () => {
    const { client } = harness().app;
    const name = uniq();
    await client.post('/v1/auth/register', { user_name: name, password: 'secret-pw' }).expect(201, {});
    const row = await harness().infra.db('users').where({ user_name: name }).first();
    assert.ok(row);
    assert.match(row.password_hash, /^\$2[aby]\$\d\d\$/);
    assert.ok(!String(row.password_hash).includes('secret-pw'));
  });

  it('returns 400 user-already-exists for a taken name and keeps one row', async () => {
    const { client } = harness().app;
    const name = uniq();
    await client.post('/v1/auth/register', { user_name: name, password: 'a' }).expect(201);
    await client.post('/v1/auth/register', { user_name: name, password: 'b' }).expect(400, { message: 'user-already-exists' });
    const rows = await harness().infra.db('users').where({ user_name: name });
    assert.equal(rows.length, 1);
  });

  const bad: [string, unknown][] = [
    ['an empty user_name', { user_name: '', password: 'x' }],
    ['a user_name over 255 characters', { user_name: 'a'.repeat(256), password: 'x' }],
    ['an empty password', { user_name: 'someone', password: '' }],
    ['a password over 72 bytes', { user_name: 'someone', password: 'é'.repeat(37) }],
    ['a missing password', { user_name: 'someone' }],
    ['a boolean user_name', { user_name: true, password: 'x' }],
    ['a null password', { user_name: 'someone', password: null }],
    ['an array body', [{ user_name: 'someone', password: 'x' }]],
    ['a NUL character in the name', { user_name: 'bad\u0000name', password: 'x' }],
  ];
  for (const [what, body] of bad) {
    it(`returns 400 bad-parameters for ${what} and creates nobody`, async () => {
      const { client } = harness().app;
      const before = await harness().infra.db('users').count<{ count: string }[]>('* as count');
      await client.post('/v1/auth/register', body as object).expect(400).expect(badParameters);
      const after = await harness().infra.db('users').count<{ count: string }[]>('* as count');
      assert.equal(Number(after[0].count), Number(before[0].count));
    });
  }

  it('returns 400 bad-parameters for malformed JSON', async () => {
    await harness().app.client.post('/v1/auth/register', '{"user_name": "x",').expect(400).expect(badParameters);
  });

  it('accepts a password of exactly 72 bytes and a 255-character name', async () => {
    const { client } = harness().app;
    const name = uniq().padEnd(255, 'x');
    const password = 'é'.repeat(36);
    await client.post('/v1/auth/register', { user_name: name, password }).expect(201);
    await client.post('/v1/auth/login', { user_name: name, password }).expect(201);
  });

  it('accepts a JSON number as user_name and stores its decimal text', async () => {
    const { client } = harness().app;
    const n = Math.floor(Math.random() * 1e12);
    await client.post('/v1/auth/register', { user_name: n, password: 'pw' }).expect(201);
    await client.post('/v1/auth/login', { user_name: String(n), password: 'pw' }).expect(201);
  });
});

describe('POST /v1/auth/login', () => {
  it('returns 201 with a 32-hex session_id that differs on every login', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const again = await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(201);
    const other = (again.body as { session_id: string }).session_id;
    assert.match(other, /^[0-9a-f]{32}$/);
    assert.notEqual(other, u.session);
  });

  it('returns 400 user-not-found for an unknown name', async () => {
    await harness().app.client.post('/v1/auth/login', { user_name: uniq(), password: 'x' }).expect(400, { message: 'user-not-found' });
  });

  it('returns 400 bad-password for a wrong password', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    await client.post('/v1/auth/login', { user_name: u.userName, password: 'wrong' }).expect(400, { message: 'bad-password' });
  });

  it('returns 400 bad-parameters for a missing user_name', async () => {
    await harness().app.client.post('/v1/auth/login', { password: 'x' }).expect(400).expect(badParameters);
  });

  it('records the session in PostgreSQL by hash only, with its expiry', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const hash = createHash('sha256').update(Buffer.from(u.session, 'hex')).digest();
    const row = await harness().infra.db('sessions').where({ token_hash: hash }).first();
    assert.ok(row, 'session row missing');
    const ttlMs = new Date(row.expires_at).getTime() - new Date(row.created_at).getTime();
    assert.ok(Math.abs(ttlMs - 3600_000) < 5000, `expected a 1 hour session, got ${ttlMs} ms`);
    assert.equal(row.revoked_at, null);
  });

  it('hashes with bcrypt cost 10 unless configured otherwise', () => {
    assert.equal(loadConfig({}).bcryptCost, 10);
  });
});

describe('sessions', () => {
  it('answers 401 auth-failed without an Authorization header, even for unknown paths', async () => {
    const { client } = harness().app;
    await client.post('/v1/chats', { chat_name: 'x' }).expect(401, { message: 'auth-failed' });
    await client.get('/no/such/path').expect(401, { message: 'auth-failed' });
  });

  it('answers 401 auth-failed for a malformed header', async () => {
    const { client } = harness().app;
    for (const header of ['session_id', 'Bearer 0123456789abcdef0123456789abcdef', 'session_id not-hex', 'session_id 123']) {
      await client
        .request('POST', '/v1/chats')
        .set('Authorization', header)
        .send({ chat_name: 'x' })
        .expect(401, { message: 'auth-failed' });
    }
  });

  it('answers 401 invalid-session-id for an unknown session', async () => {
    await harness().app.client.post('/v1/chats', { chat_name: 'x' }, 'f'.repeat(32)).expect(401, { message: 'invalid-session-id' });
  });

  it('accepts the dashed form of a session id', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const s = u.session;
    const dashed = `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
    const res = await client.post('/v1/chats', { chat_name: 'dashed-session' }, dashed).expect(201);
    const chatId = (res.body as { chat_id: string }).chat_id;
    assert.match(chatId, /^[0-9a-f]{32}$/);
    const row = await harness().infra.db('chats').where('id', chatId).first('chat_name');
    assert.equal(row.chat_name, 'dashed-session');
    // The dashed form named the same, still-live session.
    await client.post('/v1/chats', { chat_name: 'plain' }, s).expect(201);
  });

  it('POST /v1/auth/logout ends the session at once; a second logout is 401 invalid-session-id', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    await client.post('/v1/auth/logout', undefined, u.session).expect(200, {});
    await client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(401, { message: 'invalid-session-id' });
    await client.post('/v1/auth/logout', undefined, u.session).expect(401, { message: 'invalid-session-id' });
  });

  it('logout on one app instance is seen at once by another sharing the stores', async () => {
    const other = await startApp(harness().infra);
    try {
      const { client } = harness().app;
      const u = await buildUser(client);
      await other.client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(201);
      await client.post('/v1/auth/logout', undefined, u.session).expect(200);
      await other.client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(401, { message: 'invalid-session-id' });
    } finally {
      await other.close();
    }
  });

  it('a session lost from Redis is restored from PostgreSQL', async () => {
    const { client } = harness().app;
    const { kv } = harness().infra;
    const u = await buildUser(client);
    await kv.del(sessionKey(u.session));
    assert.equal(await kv.get(sessionKey(u.session)), null);
    await client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(201);
    assert.notEqual(await kv.get(sessionKey(u.session)), null, 'session was not put back');
  });

  it('a logged-out session is not restored after Redis loses it', async () => {
    const { client } = harness().app;
    const { kv } = harness().infra;
    const u = await buildUser(client);
    await client.post('/v1/auth/logout', undefined, u.session).expect(200);
    await kv.del(sessionKey(u.session));
    await client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(401, { message: 'invalid-session-id' });
  });

  it('GET /v1/auth/me answers 401 invalid-session-id for a session still in the store whose account was deleted', async () => {
    const { client } = harness().app;
    const { db, kv } = harness().infra;
    const u = await buildUser(client);
    await client.get('/v1/auth/me', u.session).expect(200);
    // An operator deletes the account; the sessions' rows go with it, the store's entry lives on until its TTL.
    await db('users').where({ user_name: u.userName }).delete();
    assert.equal(await db('users').where({ user_name: u.userName }).first(), undefined);
    assert.notEqual(await kv.get(sessionKey(u.session)), null);
    await client.get('/v1/auth/me', u.session).expect(401, { message: 'invalid-session-id' });
  });

  it('an expired session answers 401 session-id-expired', async function () {
    this.timeout(10_000);
    const shortLived = await startApp(harness().infra, { SESSION_TTL_SECONDS: '1' });
    try {
      const u = await buildUser(shortLived.client);
      await shortLived.client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(201);
      // A read with no side effect, until the session's second is over.
      const probe = `/v1/chats/${'0'.repeat(32)}/messages?limit=1`;
      await waitUntil('the session to expire', async () => (await shortLived.client.get(probe, u.session)).status === 401, 5000);
      await shortLived.client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(401, { message: 'session-id-expired' });
    } finally {
      await shortLived.close();
    }
  });
});
