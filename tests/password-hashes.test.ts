import assert from 'node:assert/strict';
import bcrypt from 'bcryptjs';
import type { Kv } from '../messenger/infra/kv';
import { harness, startApp, type Running } from './helpers/harness';
import { buildUser, uniq } from './helpers/factories';

/** The stored password hash of an account. */
async function storedHash(userName: string): Promise<string> {
  const row = (await harness().infra.db('users').where({ user_name: userName }).first('password_hash')) as { password_hash: string };
  return row.password_hash;
}

async function setHash(userName: string, hash: string): Promise<void> {
  await harness().infra.db('users').where({ user_name: userName }).update({ password_hash: hash });
}

/**
 * An app whose login guard runs `action` once, when the next login or
 * password change has finished comparing its password and not yet used the
 * hash (the guard's end decrements the attempts in progress): a change or a
 * re-hash committing exactly then.
 */
async function appRacing(overrides: Record<string, string>): Promise<{ app: Running; arm(action: () => Promise<void>): void }> {
  const { kv } = harness().infra;
  let armed: (() => Promise<void>) | undefined;
  const racing: Kv = Object.create(kv) as Kv;
  racing.incr = async (key, ttl, by) => {
    const action = armed;
    if (by === -1 && action !== undefined) {
      armed = undefined;
      await action();
    }
    return kv.incr(key, ttl, by);
  };
  const app = await startApp({ ...harness().infra, kv: racing }, overrides);
  return { app, arm: (action) => (armed = action) };
}

describe('password hashes follow BCRYPT_COST', function () {
  this.timeout(30_000);
  let cost5: Running;

  before(async () => {
    cost5 = await startApp(harness().infra, { BCRYPT_COST: '5' });
  });

  after(async () => {
    await cost5.close();
  });

  it('a login re-hashes a password hashed at another cost than BCRYPT_COST, up or down, and the password keeps working', async () => {
    // Registered at the suite's cost 4.
    const u = await buildUser(harness().app.client);
    const before = await storedHash(u.userName);
    assert.equal(bcrypt.getRounds(before), 4);
    await cost5.client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(201);
    // Before, the hash stayed at cost 4 for ever.
    const after = await storedHash(u.userName);
    assert.equal(bcrypt.getRounds(after), 5);
    assert.ok(await bcrypt.compare(u.password, after));
    // Same cost: nothing to do, the hash is kept.
    await cost5.client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(201);
    assert.equal(await storedHash(u.userName), after);
    // Back at cost 4 (BCRYPT_COST lowered): re-hashed down as well.
    await harness().app.client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(201);
    assert.equal(bcrypt.getRounds(await storedHash(u.userName)), 4);
  });

  it('a failed login re-hashes nothing', async () => {
    const u = await buildUser(harness().app.client);
    const before = await storedHash(u.userName);
    await cost5.client.post('/v1/auth/login', { user_name: u.userName, password: 'wrong one' }).expect(400, { message: 'bad-password' });
    assert.equal(await storedHash(u.userName), before);
  });

  it('a password change committed between a login\'s comparison and its re-hash wins: the login is bad-password, the new password stands', async () => {
    const r = await appRacing({ BCRYPT_COST: '5' });
    try {
      const u = await buildUser(harness().app.client);
      const changed = bcrypt.hashSync('the new one', 4);
      r.arm(() => setHash(u.userName, changed));
      await r.app.client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(400, { message: 'bad-password' });
      assert.equal(await storedHash(u.userName), changed);
      await harness().app.client.post('/v1/auth/login', { user_name: u.userName, password: 'the new one' }).expect(201);
    } finally {
      await r.app.close();
    }
  });

  it('a login or a password change whose hash another login re-hashed meanwhile goes on over the new hash', async () => {
    const r = await appRacing({});
    try {
      const u = await buildUser(harness().app.client);
      // Another instance (BCRYPT_COST 5) re-hashes the same password while this login compares it.
      r.arm(async () => setHash(u.userName, await bcrypt.hash(u.password, 5)));
      const pair = (await r.app.client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(201)).body as { session_id: string };
      // This instance's cost is 4 again: it re-hashed back.
      assert.equal(bcrypt.getRounds(await storedHash(u.userName)), 4);
      r.arm(async () => setHash(u.userName, await bcrypt.hash(u.password, 5)));
      await r.app.client.post('/v1/auth/password', { password: u.password, new_password: 'changed after all' }, pair.session_id).expect(200);
      await harness().app.client.post('/v1/auth/login', { user_name: u.userName, password: 'changed after all' }).expect(201);
      await harness().app.client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(400, { message: 'bad-password' });
    } finally {
      await r.app.close();
    }
  });

  it('two logins at once that both re-hash both succeed, and one hash at BCRYPT_COST is left', async () => {
    const u = await buildUser(harness().app.client, { userName: uniq('pair') });
    const [a, b] = await Promise.all([0, 1].map(() => cost5.client.post('/v1/auth/login', { user_name: u.userName, password: u.password })));
    assert.deepEqual([a.status, b.status], [201, 201]);
    assert.equal(bcrypt.getRounds(await storedHash(u.userName)), 5);
  });
});

describe('passwords are compared in Unicode NFC', function () {
  this.timeout(30_000);
  // "café" with é as one code point (NFC) and as e + U+0301 COMBINING ACUTE ACCENT (NFD, as some keyboards type it).
  const composed = 'caf\u00e9 au lait';
  const decomposed = 'cafe\u0301 au lait';

  it('a password registered in one form logs in and is changed in the other; the hash is of the NFC form', async () => {
    const { client } = harness().app;
    const u = await buildUser(client, { password: decomposed });
    assert.ok(await bcrypt.compare(composed, await storedHash(u.userName)));
    // Before, the other keyboard's "é" was another password: 400 bad-password.
    const pair = (await client.post('/v1/auth/login', { user_name: u.userName, password: composed }).expect(201)).body as { session_id: string };
    await client.post('/v1/auth/password', { password: composed, new_password: 'nai\u0308ve' }, pair.session_id).expect(200);
    await client.post('/v1/auth/login', { user_name: u.userName, password: 'na\u00efve' }).expect(201);
    assert.ok(await bcrypt.compare('na\u00efve', await storedHash(u.userName)));
  });

  it('an account whose hash is of a password as typed before NFC still logs in with it, and is re-hashed in NFC on that login', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    // As registered before passwords were normalised: a hash of the decomposed form.
    await setHash(u.userName, bcrypt.hashSync(decomposed, 4));
    // Typed in the composed form, it cannot be told from a wrong password yet.
    await client.post('/v1/auth/login', { user_name: u.userName, password: composed }).expect(400, { message: 'bad-password' });
    await client.post('/v1/auth/login', { user_name: u.userName, password: decomposed }).expect(201);
    const after = await storedHash(u.userName);
    assert.ok(await bcrypt.compare(composed, after), 're-hashed in NFC');
    assert.equal(bcrypt.getRounds(after), 4);
    await client.post('/v1/auth/login', { user_name: u.userName, password: composed }).expect(201);
    await client.post('/v1/auth/login', { user_name: u.userName, password: decomposed }).expect(201);
    assert.equal(await storedHash(u.userName), after, 'an NFC hash at BCRYPT_COST is kept');
  });

  it('the current password of a change may be the one typed before NFC', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    await setHash(u.userName, bcrypt.hashSync(decomposed, 4));
    await client.post('/v1/auth/password', { password: decomposed, new_password: 'something else' }, u.session).expect(200);
    await client.post('/v1/auth/login', { user_name: u.userName, password: 'something else' }).expect(201);
  });

  it('the 72-byte limit applies to the NFC form: 36 decomposed "é" (108 bytes typed, 72 in NFC) register; 73 bytes in NFC do not', async () => {
    const { client } = harness().app;
    const userName = uniq('long');
    await client.post('/v1/auth/register', { user_name: userName, password: `${'e\u0301'.repeat(35)}\u20ac` }).expect(400, { message: 'bad-parameters' });
    await client.post('/v1/auth/register', { user_name: userName, password: 'e\u0301'.repeat(36) }).expect(201);
    await client.post('/v1/auth/login', { user_name: userName, password: '\u00e9'.repeat(36) }).expect(201);
  });
});
