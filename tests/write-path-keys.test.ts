import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ServiceUnavailable } from '../messenger/errors';
import { parseId } from '../messenger/ids';
import type { Broker } from '../messenger/infra/broker';
import { MODE, deleteQueues, testEnv } from './helpers/env';
import { harness, startApp, type Running } from './helpers/harness';
import { buildChat, buildUser, joinChat, type TestUser } from './helpers/factories';
import { waitUntil } from './helpers/wait';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dashed = (wire: string) => parseId(wire) as string;

// The write-behind mode when the publish of a post with an Idempotency-Key
// fails (503): a key this post reserved is given back, so the failed request
// leaves nothing behind, while a key answered before keeps its first id.
describe('write path, MESSAGE_STORAGE_TYPE=rabbitmq: a failed publish of a post with an Idempotency-Key', function () {
  this.timeout(60_000);
  let app: Running;
  let queue: string;
  let failing = false;
  let u: TestUser;
  let chatId: string;
  let userId: string;

  before(async () => {
    queue = `${testEnv().SEARCH_QUEUE}.sync.${randomBytes(3).toString('hex')}`;
    const settings = { MESSAGE_STORAGE_TYPE: 'rabbitmq', SYNC_QUEUE: queue, SYNC_IN_PROCESS: '1', SYNC_FLUSH_MS: '20', NGINX_THROTTLING: '1' };
    // The real broker, except that publishing to the sync queue fails while `failing` is set.
    const wrap = (b: Broker): Broker =>
      new Proxy(b, {
        get(target, prop) {
          if (prop === 'publish') {
            return (q: string, body: object) => (failing && q === queue ? Promise.reject(new ServiceUnavailable()) : target.publish(q, body));
          }
          const v: unknown = Reflect.get(target, prop, target);
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    app = await startApp(harness().infra, settings, wrap);
    u = await buildUser(app.client);
    chatId = await buildChat(app.client, u.session);
    userId = await joinChat(app.client, chatId, u.session);
  });
  after(async () => {
    failing = false;
    await app.close();
    if (MODE === 'services') await deleteQueues(queue);
  });

  const post = (key: string) =>
    app.client.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, { message: `keyed ${key}` }, u.session).set('Idempotency-Key', key);
  const keyRows = async (key: string) => harness().infra.db('idempotency_keys').where({ key }).select<{ message_id: string }[]>('message_id');
  const stored = async (text: string) => harness().infra.db('messages').where({ chat_id: dashed(chatId), text }).select<{ id: string }[]>('id');
  async function storedEventually(text: string, n: number): Promise<{ id: string }[]> {
    await waitUntil(`${n} stored`, async () => (await stored(text)).length >= n, 10_000, 20).catch(() => undefined);
    return stored(text);
  }

  it('a key first used by the failed post is given back: no key, no message; the retry is stored once', async () => {
    const key = `k-${randomBytes(6).toString('hex')}`;
    failing = true;
    const res = await post(key);
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { message: 'service-unavailable' });
    assert.deepEqual(await keyRows(key), [], 'the failed request left its key behind');
    failing = false;
    const ok = await post(key);
    assert.equal(ok.status, 201);
    const id = (ok.body as { message_id: string }).message_id;
    assert.deepEqual(await keyRows(key), [{ message_id: dashed(id) }]);
    assert.deepEqual(await storedEventually(`keyed ${key}`, 1), [{ id: dashed(id) }]);
    const again = await post(key);
    assert.equal(again.status, 201);
    assert.deepEqual(again.body, { message_id: id });
    await sleep(100);
    assert.deepEqual(await stored(`keyed ${key}`), [{ id: dashed(id) }], 'stored once');
  });

  it('a key answered before keeps its first id when a retry fails to publish; the next retry answers that id', async () => {
    const key = `k-${randomBytes(6).toString('hex')}`;
    const first = await post(key);
    assert.equal(first.status, 201);
    const id = (first.body as { message_id: string }).message_id;
    assert.deepEqual(await storedEventually(`keyed ${key}`, 1), [{ id: dashed(id) }]);
    failing = true;
    const res = await post(key);
    assert.equal(res.status, 503);
    assert.deepEqual(await keyRows(key), [{ message_id: dashed(id) }], 'the first answer\'s key must stay');
    failing = false;
    const again = await post(key);
    assert.equal(again.status, 201);
    assert.deepEqual(again.body, { message_id: id });
    await sleep(100);
    assert.deepEqual(await stored(`keyed ${key}`), [{ id: dashed(id) }], 'stored once');
  });

  it('without a key, a failed publish is 503 service-unavailable and stores nothing', async () => {
    const text = `unkeyed ${randomBytes(6).toString('hex')}`;
    failing = true;
    const res = await app.client.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, { message: text }, u.session);
    failing = false;
    assert.equal(res.status, 503);
    assert.deepEqual(res.body, { message: 'service-unavailable' });
    await sleep(100);
    assert.deepEqual(await stored(text), []);
  });
});

// A key reused with a `user_id` that is not one of the caller's identities in
// the chat: a request that could never be stored gets its 404 in every mode,
// not the first answer (db_direct answered 201 with the first message's id
// until 2026-12-07, while rabbitmq and no_storage answered 404).
for (const mode of ['db_direct', 'rabbitmq', 'no_storage'] as const) {
  describe(`write path, MESSAGE_STORAGE_TYPE=${mode}: an Idempotency-Key reused with a user_id that is not the caller's`, function () {
    this.timeout(60_000);
    let app: Running;
    let queue: string;

    before(async () => {
      queue = `${testEnv().SEARCH_QUEUE}.sync.${randomBytes(3).toString('hex')}`;
      app = await startApp(harness().infra, { MESSAGE_STORAGE_TYPE: mode, SYNC_QUEUE: queue, SYNC_IN_PROCESS: '1', SYNC_FLUSH_MS: '20', NGINX_THROTTLING: '1' });
    });
    after(async () => {
      await app.close();
      if (MODE === 'services' && mode === 'rabbitmq') await deleteQueues(queue);
    });

    it('is 404 user-not-found (someone else\'s identity, an unknown id), the same key with the caller\'s own id still the first answer', async () => {
      const { client } = app;
      const u = await buildUser(client);
      const chatId = await buildChat(client, u.session);
      const mine = await joinChat(client, chatId, u.session);
      const other = await buildUser(client);
      const theirs = await joinChat(client, chatId, other.session);
      const key = `k-${randomBytes(6).toString('hex')}`;
      const post = (userId: string) =>
        client.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, { message: 'keyed once' }, u.session).set('Idempotency-Key', key);
      const first = await post(mine);
      assert.equal(first.status, 201);
      for (const userId of [theirs, randomBytes(16).toString('hex')]) {
        const res = await post(userId);
        assert.deepEqual([res.status, res.body], [404, { message: 'user-not-found' }], `user_id ${userId === theirs ? 'of another account' : 'unknown'}`);
      }
      const again = await post(mine);
      assert.deepEqual([again.status, again.body], [201, first.body]);
    });
  });
}
