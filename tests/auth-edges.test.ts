import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { app as authModule } from '../messenger/apps/auth';
import { SessionStore } from '../messenger/apps/auth/sessions';
import type { Kv } from '../messenger/infra/kv';
import type { ApiContext, OperationInput } from '../messenger/types';
import { harness } from './helpers/harness';
import { buildUser, uniq } from './helpers/factories';

interface Pair {
  session_id: string;
  refresh_token: string;
  expires_in: number;
}

const tokenHash = (token: string) => createHash('sha256').update(Buffer.from(token, 'hex')).digest();
const sessionKey = (token: string) => `session:${tokenHash(token).toString('hex')}`;

async function login(userName: string, password: string): Promise<Pair> {
  return (await harness().app.client.post('/v1/auth/login', { user_name: userName, password }).expect(201)).body as Pair;
}

async function refresh(token: string): Promise<Pair> {
  return (await harness().app.client.post('/v1/auth/refresh', { refresh_token: token }).expect(201)).body as Pair;
}

async function sessionRow(token: string): Promise<{ first_used_at: Date | null; revoked_at: Date | null }> {
  return harness().infra.db('sessions').where({ token_hash: tokenHash(token) }).first('first_used_at', 'revoked_at');
}

/** GET /v1/auth/me with a raw Authorization header. */
function me(header: string) {
  return harness().app.client.request('GET', '/v1/auth/me').set('Authorization', header);
}

describe('auth edges: tokens, headers and the session store', () => {
  it('a refresh token with a character base64url decoding would skip, before or after it, is refused and changes nothing', async () => {
    const u = await buildUser(harness().app.client);
    const pair = await login(u.userName, u.password);
    const { client } = harness().app;
    // Buffer.from(x, 'base64url') ignores '!' and '.', so these decode to the real token's bytes.
    for (const token of [`!${pair.refresh_token}`, `${pair.refresh_token}!`, `${pair.refresh_token}.`]) {
      await client.post('/v1/auth/refresh', { refresh_token: token }).expect(401, { message: 'invalid-refresh-token' });
    }
    // Still the current token: one exchange works, and the login's session was live until then.
    await client.get('/v1/auth/me', pair.session_id).expect(200);
    const next = await refresh(pair.refresh_token);
    await client.get('/v1/auth/me', next.session_id).expect(200);
  });

  it('the Authorization header is `session_id`, whitespace, the id, and nothing else', async () => {
    const u = await buildUser(harness().app.client);
    await me(`session_id \t ${u.session}`).expect(200);
    await me(`SESSION_ID ${u.session}`).expect(200);
    for (const header of [`xsession_id ${u.session}`, `session_id ${u.session} x`, `session_id${u.session}`, `Bearer session_id ${u.session}`]) {
      await me(header).expect(401, { message: 'auth-failed' });
    }
  });

  it('a request with more than one Authorization header is 401 auth-failed, whichever sessions they name; public paths ignore them', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const other = await buildUser(client);
    const mine = `session_id ${u.session}`;
    // Before, Node kept the first header and the request ran as that session, whatever the others said.
    // superagent sends an array as one header line per value (its types allow that only for Cookie).
    const several = (values: string[]) => values as unknown as string;
    for (const headers of [[mine, mine], [mine, `session_id ${other.session}`], [mine, 'Bearer x'], ['', mine]]) {
      await client.request('GET', '/v1/auth/me').set('Authorization', several(headers)).expect(401, { message: 'auth-failed' });
      await client.request('GET', '/v1/nowhere').set('Authorization', several(headers)).expect(401, { message: 'auth-failed' });
    }
    await me(mine).expect(200);
    await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('Authorization', several([mine, mine])).expect(201);
  });

  it('a login session\'s use is not recorded as a first use; a refreshed session\'s is, also when the store lost it before', async () => {
    const { client } = harness().app;
    const { kv } = harness().infra;
    const u = await buildUser(client);
    const pair = await login(u.userName, u.password);
    await client.get('/v1/auth/me', pair.session_id).expect(200);
    assert.equal((await sessionRow(pair.session_id)).first_used_at, null);

    const next = await refresh(pair.refresh_token);
    assert.equal((await sessionRow(next.session_id)).first_used_at, null);
    // The store loses the entry before the session's first request: the one rebuilt from the database still records it.
    await kv.del(sessionKey(next.session_id));
    await client.get('/v1/auth/me', next.session_id).expect(200);
    assert.ok((await sessionRow(next.session_id)).first_used_at instanceof Date);
    // And a used pair's token replayed is theft: the chain ends.
    const third = await refresh(next.refresh_token);
    await client.get('/v1/auth/me', third.session_id).expect(200);
    await client.post('/v1/auth/refresh', { refresh_token: next.refresh_token }).expect(401, { message: 'invalid-refresh-token' });
    await client.get('/v1/auth/me', third.session_id).expect(401, { message: 'invalid-session-id' });
  });

  it('a session stays in the store for its lifetime: after login, after a refresh and after the first use rewrote it', async () => {
    const { client } = harness().app;
    const { kv } = harness().infra;
    const u = await buildUser(client);
    const pair = await login(u.userName, u.password);
    // The session's hour, give or take the time this test takes: never a second, never past the session.
    const inRange = (ttl: number, what: string) => assert.ok(ttl > 60 && ttl <= 3600, `${what}: TTL ${ttl}`);
    inRange(await kv.ttl(sessionKey(pair.session_id)), 'login');
    const next = await refresh(pair.refresh_token);
    inRange(await kv.ttl(sessionKey(next.session_id)), 'refresh');
    await client.get('/v1/auth/me', next.session_id).expect(200);
    inRange(await kv.ttl(sessionKey(next.session_id)), 'first use');
    // The rewritten entry no longer asks for a first use: the recorded time stays.
    const used = (await sessionRow(next.session_id)).first_used_at as Date;
    await harness().infra.db('sessions').where({ token_hash: tokenHash(next.session_id) }).update({ first_used_at: new Date(used.getTime() - 60_000) });
    await client.get('/v1/auth/me', next.session_id).expect(200);
    assert.equal(((await sessionRow(next.session_id)).first_used_at as Date).getTime(), used.getTime() - 60_000);
  });

  it('a refreshed session revoked in the database before its first use is refused at that use, and dropped from the store', async () => {
    const { client } = harness().app;
    const { db, kv } = harness().infra;
    const u = await buildUser(client);
    const next = await refresh((await login(u.userName, u.password)).refresh_token);
    // Revoked without its store entry being dropped (as if that delete was lost).
    await db('sessions').where({ token_hash: tokenHash(next.session_id) }).update({ revoked_at: new Date() });
    assert.notEqual(await kv.get(sessionKey(next.session_id)), null);
    await client.get('/v1/auth/me', next.session_id).expect(401, { message: 'invalid-session-id' });
    assert.equal(await kv.get(sessionKey(next.session_id)), null);
    await client.get('/v1/auth/me', next.session_id).expect(401, { message: 'invalid-session-id' });
  });

  it('logout drops the session from the store even when the database had it revoked already', async () => {
    const { client } = harness().app;
    const { db, kv } = harness().infra;
    const u = await buildUser(client);
    await db('sessions').where({ token_hash: tokenHash(u.session) }).update({ revoked_at: new Date() });
    // The store still has it (its delete was lost), so the request is let in and logs out.
    await client.post('/v1/auth/logout', undefined, u.session).expect(200, {});
    assert.equal(await kv.get(sessionKey(u.session)), null);
    await client.get('/v1/auth/me', u.session).expect(401, { message: 'invalid-session-id' });
  });

  it('logout of a session made before login chains (no chain) revokes it in the database too', async () => {
    const { client } = harness().app;
    const { db, kv } = harness().infra;
    const legacySession = async (userName: string) => {
      const user = (await db('users').where({ user_name: userName }).first('id')) as { id: string };
      const token = randomBytes(16).toString('hex');
      await db('sessions').insert({ token_hash: tokenHash(token), user_id: user.id, expires_at: new Date(Date.now() + 3600_000), chain_id: null, first_used_at: new Date() });
      await client.get('/v1/auth/me', token).expect(200);
      return token;
    };
    const u = await buildUser(client);
    const legacy = await legacySession(u.userName);
    const someoneElse = await legacySession((await buildUser(client)).userName);
    await client.post('/v1/auth/logout', undefined, legacy).expect(200, {});
    assert.ok((await sessionRow(legacy)).revoked_at instanceof Date);
    await kv.del(sessionKey(legacy));
    await client.get('/v1/auth/me', legacy).expect(401, { message: 'invalid-session-id' });
    // The account's other session, and another account's session without a chain, are untouched.
    await client.get('/v1/auth/me', u.session).expect(200);
    await client.get('/v1/auth/me', someoneElse).expect(200);
    assert.equal((await sessionRow(someoneElse)).revoked_at, null);
  });

  it('a one-byte password registers, logs in and can be changed to another one-byte password', async () => {
    const { client } = harness().app;
    const name = uniq('short');
    await client.post('/v1/auth/register', { user_name: name, password: 'a' }).expect(201, {});
    const pair = await login(name, 'a');
    await client.post('/v1/auth/password', { password: 'a', new_password: 'b' }, pair.session_id).expect(200, {});
    await client.post('/v1/auth/login', { user_name: name, password: 'a' }).expect(400, { message: 'bad-password' });
    await login(name, 'b');
  });

  it('register: a database error other than a taken name is 500 internal-error, not 400 user-already-exists, and stores nothing', async () => {
    const { db } = harness().infra;
    const name = `reject-${randomBytes(4).toString('hex')}`;
    // A constraint the insert breaks: a refusal (23514) that is not a unique violation (23505).
    await db.raw(`ALTER TABLE users ADD CONSTRAINT test_reject_names CHECK (user_name NOT LIKE 'reject-%') NOT VALID`);
    try {
      const res = await harness().app.client.post('/v1/auth/register', { user_name: name, password: 'a password' });
      assert.equal(res.status, 500);
      assert.deepEqual(res.body, { message: 'internal-error' });
    } finally {
      await db.raw('ALTER TABLE users DROP CONSTRAINT test_reject_names');
    }
    assert.equal(await db('users').where({ user_name: name }).first(), undefined);
    // The same name registers once the refusal is gone; a second time it is taken (400).
    await harness().app.client.post('/v1/auth/register', { user_name: name, password: 'a password' }).expect(201);
    await harness().app.client.post('/v1/auth/register', { user_name: name, password: 'a password' }).expect(400, { message: 'user-already-exists' });
  });

  it("the auth app's stop closes its bcrypt threads: a register after it fails and stores nothing", async () => {
    const { infra } = harness();
    const auth = authModule.create(infra, new Set(['auth']));
    const register = auth.handlers.register;
    assert.ok(register !== undefined && auth.stop !== undefined);
    const attempt = async (userName: string) => {
      const ctx = {} as ApiContext;
      await register(ctx, { body: { user_name: userName, password: 'a password' } } as OperationInput<'register'>);
      return ctx.status;
    };
    const [before, after] = [uniq('open'), uniq('closed')];
    assert.equal(await attempt(before), 201);
    await auth.stop();
    await assert.rejects(attempt(after), /password hasher closed/);
    const names = (await infra.db('users').whereIn('user_name', [before, after]).pluck('user_name')) as string[];
    assert.deepEqual(names, [before]);
  });
});

describe('auth edges: a login racing a password change', () => {
  const store = (kv: Kv = harness().infra.kv) => new SessionStore(harness().infra.db, kv, harness().infra.events, 3600, 86_400);
  const account = async (userName: string) => (await harness().infra.db('users').where({ user_name: userName }).first('id', 'password_hash')) as { id: string; password_hash: string };

  it('a login whose password was checked against the hash a password change replaced issues nothing (the login answers bad-password)', async () => {
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const before = await account(u.userName);
    // The change commits while the login's comparison (against the old hash) is still running...
    await client.post('/v1/auth/password', { password: u.password, new_password: 'changed' }, u.session).expect(200);
    const sessions = async () => Number((await db('sessions').where({ user_id: before.id }).count<{ n: string }[]>('* as n'))[0].n);
    const count = await sessions();
    // ...then the login goes on to issue: before, a session made with the old password outlived the change.
    assert.equal(await store().login(before.id, u.userName, before.password_hash), undefined);
    assert.equal(await sessions(), count);
    const now = await account(u.userName);
    const pair = await store().login(now.id, u.userName, now.password_hash);
    assert.ok(pair !== undefined);
    await client.get('/v1/auth/me', pair.sessionId).expect(200);
  });

  it('a login session ended between its commit and its caching is not left live in the store', async () => {
    const { client } = harness().app;
    const { db, kv } = harness().infra;
    const u = await buildUser(client);
    const { id, password_hash } = await account(u.userName);
    // As if a password change ended every session (and dropped them from the store) just before this login cached its own.
    const racing: Kv = Object.create(kv) as Kv;
    racing.set = async (key, value, ttl) => {
      if (key.startsWith('session:')) await db('sessions').where({ user_id: id }).whereNull('revoked_at').update({ revoked_at: new Date() });
      return kv.set(key, value, ttl);
    };
    const pair = await store(racing).login(id, u.userName, password_hash);
    assert.ok(pair !== undefined);
    assert.equal(await kv.get(sessionKey(pair.sessionId)), null);
    await client.get('/v1/auth/me', pair.sessionId).expect(401, { message: 'invalid-session-id' });
  });

  it('of two password changes made with the same current password at once, one answers 200 and keeps its session; the other 400 bad-password', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const other = (await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(201)).body as Pair;
    const [a, b] = await Promise.all([
      client.post('/v1/auth/password', { password: u.password, new_password: 'first' }, u.session),
      client.post('/v1/auth/password', { password: u.password, new_password: 'second' }, other.session_id),
    ]);
    // Before, both answered 200, each ended the other's session, and one of the two new passwords silently did not hold.
    assert.deepEqual([a.status, b.status].sort(), [200, 400]);
    const [won, lost, wonSession] = a.status === 200 ? [a, b, u.session] : [b, a, other.session_id];
    assert.deepEqual(lost.body, { message: 'bad-password' });
    await client.get('/v1/auth/me', wonSession).expect(200);
    const password = won === a ? 'first' : 'second';
    await client.post('/v1/auth/login', { user_name: u.userName, password }).expect(201);
    await client.post('/v1/auth/login', { user_name: u.userName, password: password === 'first' ? 'second' : 'first' }).expect(400, { message: 'bad-password' });
  });
});
