import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { harness } from './helpers/harness';
import { buildChat, buildUser, getPage, joinChat } from './helpers/factories';

const tokenHash = (token: string) => createHash('sha256').update(Buffer.from(token, 'hex')).digest();
const sessionKey = (token: string) => `session:${tokenHash(token).toString('hex')}`;

/** A chat only `owner` may read, and a probe that tells which account a session acts as. */
async function ownedChat() {
  const { client } = harness().app;
  const owner = await buildUser(client);
  const chatId = await buildChat(client, owner.session);
  await joinChat(client, chatId, owner.session, 'owner');
  const readsAsOwner = async (session: string) => (await client.get(`/v1/chats/${chatId}/messages?limit=1`, session)).status === 200;
  return { client, owner, chatId, readsAsOwner };
}

describe('sessions in the key-value store (the hot path) and their rebuild from the database', () => {
  it('a session missing from the store is rebuilt from the database as the same account, with a TTL no longer than the session', async () => {
    const { owner, readsAsOwner } = await ownedChat();
    const { kv } = harness().infra;
    await kv.del(sessionKey(owner.session));
    assert.equal(await readsAsOwner(owner.session), true, 'the rebuilt session acts as its own account');
    const cached = JSON.parse((await kv.get(sessionKey(owner.session))) ?? 'null') as { a: string; n: string; e: number };
    const row = await harness().infra.db('users').where('user_name', owner.userName).first('id');
    assert.deepEqual([cached.a, cached.n], [row.id, owner.userName]);
    // A stranger's session rebuilt the same way is that stranger: the owner's chat stays hidden from it.
    const stranger = await buildUser(harness().app.client);
    await kv.del(sessionKey(stranger.session));
    assert.equal(await readsAsOwner(stranger.session), false);
    const ttl = await kv.ttl(sessionKey(owner.session));
    const sessionSeconds = (cached.e - Date.now()) / 1000;
    assert.ok(ttl > 0 && ttl <= Math.ceil(sessionSeconds) + 1, `store TTL ${ttl} s, session left ${sessionSeconds} s`);
  });

  for (const [what, value] of [
    ['not JSON', 'not json'],
    ['JSON null', 'null'],
    ['a number', '42'],
    ['an object without the account', '{"n":"x","e":99999999999999}'],
    ['an object with a wrong-typed expiry', '{"a":"x","n":"y","e":"soon"}'],
    ['an object with a wrong-typed name', '{"a":"x","n":1,"e":99999999999999}'],
  ] as const) {
    it(`a stored session value that is ${what} is not trusted: the database decides, and the value is rebuilt`, async () => {
      const { owner, readsAsOwner } = await ownedChat();
      const { kv } = harness().infra;
      await kv.set(sessionKey(owner.session), value, 60);
      assert.equal(await readsAsOwner(owner.session), true);
      const rebuilt = JSON.parse((await kv.get(sessionKey(owner.session))) ?? 'null') as { a?: unknown; n?: unknown };
      assert.equal(rebuilt.n, owner.userName);
      assert.equal(typeof rebuilt.a, 'string');
    });
  }

  it('a stored session whose expiry has passed is not used: the database says expired, 401 session-id-expired', async () => {
    const { client } = harness().app;
    const { kv, db } = harness().infra;
    const u = await buildUser(client);
    const row = await db('users').where('user_name', u.userName).first('id');
    await db('sessions').where('token_hash', tokenHash(u.session)).update({ expires_at: new Date(Date.now() - 1000) });
    await kv.set(sessionKey(u.session), JSON.stringify({ a: row.id, n: u.userName, e: Date.now() - 1 }), 60);
    await client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(401, { message: 'session-id-expired' });
  });

  it('the same account joining a chat concurrently gets one user_id every time', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const ids = await Promise.all(Array.from({ length: 8 }, (_, i) => joinChat(client, chatId, u.session, `n${i}`)));
    assert.equal(new Set(ids).size, 1, ids.join(','));
    const page = await getPage(client, chatId, u.session, 10);
    assert.deepEqual(page.messages, []);
  });
});
