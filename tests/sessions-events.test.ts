import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type { SessionEnded } from '../messenger/events';
import { harness, startApp, type Running } from './helpers/harness';
import { buildUser } from './helpers/factories';

interface Pair {
  session_id: string;
  refresh_token: string;
}

const sha256 = (hex: string) => createHash('sha256').update(Buffer.from(hex, 'hex')).digest('hex');

async function accountId(userName: string): Promise<string> {
  const row = await harness().infra.db('users').where({ user_name: userName }).first('id');
  return row.id as string;
}

/** The `session.ended` events of one account, in the order published. */
function watchAccount(account: string) {
  const events: SessionEnded[] = [];
  const stop = harness().infra.events.subscribe('session.ended', (e) => {
    if (e.accountId === account) events.push(e);
  });
  const waitForCount = async (n: number) => {
    const until = Date.now() + 5000;
    while (events.length < n) {
      if (Date.now() > until) throw new Error(`expected ${n} session.ended events, saw ${JSON.stringify(events)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return events.slice();
  };
  return { events, waitForCount, stop };
}

describe('session.ended events name exactly the sessions ended, with the reason', () => {
  it('a refresh ends the login session (reason refresh); a retry of it ends the unused pair\'s session (refresh-retry)', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const account = await accountId(u.userName);
    const watch = watchAccount(account);
    try {
      const login = (await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(201)).body as Pair;
      const lost = (await client.post('/v1/auth/refresh', { refresh_token: login.refresh_token }).expect(201)).body as Pair;
      assert.deepEqual(await watch.waitForCount(1), [{ accountId: account, tokenHashes: [sha256(login.session_id)], reason: 'refresh' }]);
      const retried = (await client.post('/v1/auth/refresh', { refresh_token: login.refresh_token }).expect(201)).body as Pair;
      assert.deepEqual((await watch.waitForCount(2))[1], { accountId: account, tokenHashes: [sha256(lost.session_id)], reason: 'refresh-retry' });
      await client.get('/v1/auth/me', retried.session_id).expect(200);
      await client.get('/v1/auth/me', u.session).expect(200);
    } finally {
      watch.stop();
    }
  });

  it('a password change while no other session exists ends nothing and publishes nothing', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const account = await accountId(u.userName);
    const watch = watchAccount(account);
    try {
      await client.post('/v1/auth/password', { password: u.password, new_password: 'another good one' }, u.session).expect(200);
      await client.get('/v1/auth/me', u.session).expect(200);
      // Events arrive in the order published: the logout's is the first one.
      await client.post('/v1/auth/logout', undefined, u.session).expect(200);
      const events = await watch.waitForCount(1);
      assert.deepEqual(events, [{ accountId: account, tokenHashes: [sha256(u.session)], reason: 'logout' }]);
    } finally {
      watch.stop();
    }
  });
});

describe('session.ended names no session that was revoked already', () => {
  it('a refresh whose login session was revoked already rotates and publishes nothing: the next event is the logout\'s', async () => {
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const account = await accountId(u.userName);
    const watch = watchAccount(account);
    try {
      const login = (await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(201)).body as Pair;
      await db('sessions').where({ token_hash: Buffer.from(sha256(login.session_id), 'hex') }).update({ revoked_at: new Date() });
      const next = (await client.post('/v1/auth/refresh', { refresh_token: login.refresh_token }).expect(201)).body as Pair;
      await client.post('/v1/auth/logout', undefined, next.session_id).expect(200);
      assert.deepEqual(await watch.waitForCount(1), [{ accountId: account, tokenHashes: [sha256(next.session_id)], reason: 'logout' }]);
    } finally {
      watch.stop();
    }
  });

  it('logout of a session without a chain that was revoked already publishes nothing: the next event is the next logout\'s', async () => {
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const account = await accountId(u.userName);
    const watch = watchAccount(account);
    try {
      const legacy = randomBytes(16).toString('hex');
      const hash = Buffer.from(sha256(legacy), 'hex');
      await db('sessions').insert({ token_hash: hash, user_id: account, expires_at: new Date(Date.now() + 3600_000), chain_id: null, first_used_at: new Date() });
      await client.get('/v1/auth/me', legacy).expect(200);
      // Revoked in PostgreSQL; the store still lets it in.
      await db('sessions').where({ token_hash: hash }).update({ revoked_at: new Date() });
      await client.post('/v1/auth/logout', undefined, legacy).expect(200);
      await client.post('/v1/auth/logout', undefined, u.session).expect(200);
      assert.deepEqual(await watch.waitForCount(1), [{ accountId: account, tokenHashes: [sha256(u.session)], reason: 'logout' }]);
    } finally {
      watch.stop();
    }
  });
});

describe('login lockout: what counts as a failure', () => {
  // Behind a "proxy" (the test itself), so each test uses its own client address.
  const env = { LOGIN_MAX_FAILURES: '3', LOGIN_WINDOW_SECONDS: '60', NGINX_THROTTLING: '1', TRUSTED_PROXIES: '127.0.0.1,::1' };
  let app: Running;
  let next = 0;
  const address = () => `198.18.0.${++next}`;
  before(async () => {
    app = await startApp(harness().infra, env);
  });
  after(async () => app.close());

  it('a successful login clears the name\'s failures: three more wrong passwords are checked before the lockout', async () => {
    const u = await buildUser(harness().app.client);
    const from = address();
    const login = (password: string) => app.client.post('/v1/auth/login', { user_name: u.userName, password }).set('X-Forwarded-For', from);
    for (let i = 0; i < 2; i++) await login('wrong').expect(400, { message: 'bad-password' });
    await login(u.password).expect(201);
    for (let i = 0; i < 3; i++) await login('wrong').expect(400, { message: 'bad-password' });
    await login(u.password).expect(429, { message: 'too-many-login-attempts' });
  });

  it('a wrong current password on POST /v1/auth/password counts as a failure of that name, and locks it like a login', async () => {
    const u = await buildUser(harness().app.client);
    const from = address();
    for (let i = 0; i < 3; i++) {
      await app.client.post('/v1/auth/password', { password: 'wrong', new_password: 'new password' }, u.session).set('X-Forwarded-For', from).expect(400, { message: 'bad-password' });
    }
    const locked = await app.client.post('/v1/auth/password', { password: u.password, new_password: 'new password' }, u.session).set('X-Forwarded-For', from).expect(429, { message: 'too-many-login-attempts' });
    const wait = Number(locked.headers['retry-after']);
    assert.ok(wait >= 55 && wait <= 60, `Retry-After ${wait} for a 60 s window`);
    await app.client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('X-Forwarded-For', address()).expect(429, { message: 'too-many-login-attempts' });
    // Nothing changed: the old password is still the one (checked on the shared app, without the lockout).
    await harness().app.client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(201);
  });

  it('a right current password on POST /v1/auth/password clears the name\'s failures', async () => {
    const u = await buildUser(harness().app.client);
    const from = address();
    const login = (password: string) => app.client.post('/v1/auth/login', { user_name: u.userName, password }).set('X-Forwarded-For', from);
    for (let i = 0; i < 2; i++) await login('wrong').expect(400, { message: 'bad-password' });
    await app.client.post('/v1/auth/password', { password: u.password, new_password: 'second password' }, u.session).set('X-Forwarded-For', from).expect(200);
    for (let i = 0; i < 3; i++) await login('wrong').expect(400, { message: 'bad-password' });
    await login('second password').expect(429, { message: 'too-many-login-attempts' });
  });
});
