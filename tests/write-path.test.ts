import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { MessageStored } from '../messenger/events';
import { lockChats, storeBatch } from '../messenger/db/messages';
import { queuedMessage, synchronizer } from '../messenger/apps/messages/synchronizer';
import { loadConfig } from '../messenger/config';
import { parseId, toWireId, uuidv7 } from '../messenger/ids';
import { waitUntil } from './helpers/wait';
import { MODE, deleteQueues, testEnv } from './helpers/env';
import { harness, startApp, type Client, type Running } from './helpers/harness';
import { buildChat, buildUser, getPage, joinChat, uniq, type Page } from './helpers/factories';
import { openResumed, type TestSocket } from './helpers/ws';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Settings of an app in `mode`: its own queue, the synchronizer in the web process, no throttling. */
function modeSettings(mode: string, queue: string): Record<string, string> {
  return { MESSAGE_STORAGE_TYPE: mode, SYNC_QUEUE: queue, SYNC_IN_PROCESS: '1', SYNC_FLUSH_MS: '20', NGINX_THROTTLING: '1' };
}

async function post(client: Client, chatId: string, userId: string, text: string, session?: string, key?: string) {
  const t = client.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, { message: text }, session);
  if (key !== undefined) t.set('Idempotency-Key', key);
  return t;
}

async function postOk(client: Client, chatId: string, userId: string, text: string, session?: string, key?: string): Promise<string> {
  const res = await post(client, chatId, userId, text, session, key);
  assert.equal(res.status, 201, `POST answered ${res.status} ${res.text}`);
  const id = (res.body as { message_id: string }).message_id;
  assert.match(id, /^[0-9a-f]{32}$/);
  return id;
}

async function rows(chatId: string): Promise<{ id: string; seq: string; created_at: Date }[]> {
  return harness().infra.db('messages').where('chat_id', chatId.length === 32 ? chatId.replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5') : chatId).orderBy('seq').select('id', 'seq', 'created_at');
}

/** Every message of the chat, following `next` (waits until `count` are there in the write-behind mode). */
async function wholeChat(client: Client, chatId: string, session: string, count: number): Promise<Page['messages']> {
  const until = Date.now() + 15_000;
  for (;;) {
    const page = await getPage(client, chatId, session, 1000);
    if (page.messages.length >= count || Date.now() > until) return page.messages;
    await sleep(20);
  }
}

const STORING = ['db_direct', 'rabbitmq'] as const;

for (const mode of STORING) {
  describe(`write path, MESSAGE_STORAGE_TYPE=${mode}`, function () {
    this.timeout(60_000);
    let app: Running;
    let queue: string;

    before(async () => {
      queue = `${testEnv().SEARCH_QUEUE}.sync.${randomBytes(3).toString('hex')}`;
      app = await startApp(harness().infra, modeSettings(mode, queue));
    });
    after(async () => {
      await app.close();
      if (MODE === 'services') await deleteQueues(queue);
    });

    async function chatWithWriters(n: number) {
      const { client } = app;
      const owner = await buildUser(client);
      const chatId = await buildChat(client, owner.session);
      const writers = await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const w = await buildUser(client);
          return { session: w.session, userId: await joinChat(client, chatId, w.session, `writer${i}`) };
        }),
      );
      return { client, owner, chatId, writers };
    }

    it('answers 201 with a message_id and the message is in the page once stored', async () => {
      const { client, owner, chatId, writers } = await chatWithWriters(1);
      const id = await postOk(client, chatId, writers[0].userId, 'hello', writers[0].session);
      const all = await wholeChat(client, chatId, owner.session, 1);
      assert.deepEqual(all.map((m) => [m.message_id, m.text, m.user_name]), [[id, 'hello', 'writer0']]);
    });

    it('never skips or repeats a message while concurrent writers post and a reader tails; page order is each writer\'s order', async () => {
      const { client, owner, chatId, writers } = await chatWithWriters(6);
      const perWriter = 15;
      const total = writers.length * perWriter;
      const written: string[] = [];
      const writes = Promise.all(
        writers.map(async (w, i) => {
          for (let n = 0; n < perWriter; n++) written.push(await postOk(client, chatId, w.userId, `w${i}-${n}`, w.session));
        }),
      );
      const seen: string[] = [];
      let from: string | undefined;
      const until = Date.now() + 30_000;
      const tail = async () => {
        while (seen.length < total && Date.now() < until) {
          const page = await getPage(client, chatId, owner.session, 7, from);
          seen.push(...page.messages.map((m) => m.message_id));
          from = page.next.iterator;
          if (page.messages.length === 0) await sleep(5);
        }
      };
      await Promise.all([writes, tail()]);
      assert.equal(new Set(seen).size, seen.length, 'a message was repeated');
      assert.equal(seen.length, total, 'a message was skipped');
      assert.deepEqual(new Set(seen), new Set(written));
      const all = await wholeChat(client, chatId, owner.session, total);
      assert.deepEqual(seen, all.map((m) => m.message_id), 'tailing order differs from the final order');
      for (let i = 0; i < writers.length; i++) {
        const mine = all.filter((m) => m.user_name === `writer${i}`).map((m) => m.text);
        assert.deepEqual(mine, Array.from({ length: perWriter }, (_, n) => `w${i}-${n}`));
      }
      const seqs = (await rows(chatId)).map((r) => Number(r.seq));
      assert.deepEqual(seqs, Array.from({ length: total }, (_, i) => i + 1), 'the chat order has a gap');
      // The chat row keeps the last message of the last batch (migration 011); the chat list shows it.
      const list = (await client.get('/v1/chats?limit=1000', owner.session).expect(200)).body as { chats: { chat_id: string; last_message: unknown }[] };
      assert.deepEqual(list.chats.find((c) => c.chat_id === chatId)?.last_message, all.at(-1));
    });

    it('created_at never goes backwards in page order under concurrent writers', async () => {
      const { client, owner, chatId, writers } = await chatWithWriters(8);
      await Promise.all(writers.map(async (w, i) => {
        for (let n = 0; n < 12; n++) await postOk(client, chatId, w.userId, `t${i}-${n}`, w.session);
      }));
      const all = await wholeChat(client, chatId, owner.session, 96);
      assert.equal(all.length, 96);
      const times = all.map((m) => Date.parse(m.created_at));
      const backwards = times.filter((t, i) => i > 0 && t < times[i - 1]).length;
      assert.equal(backwards, 0, `${backwards} neighbours run backwards`);
    });

    it('a refused post among concurrent ones is answered 404 alone; the others are stored', async () => {
      const { client, owner, chatId, writers } = await chatWithWriters(2);
      const intruder = await buildUser(client);
      await joinChat(client, chatId, intruder.session);
      const otherChat = await buildChat(client, owner.session);
      const jobs: Promise<{ status: number; good: boolean }>[] = [];
      for (let i = 0; i < 30; i++) {
        const w = writers[i % 2];
        jobs.push(post(client, chatId, w.userId, `good ${i}`, w.session).then((r) => ({ status: r.status, good: true })));
        if (i % 5 === 0) {
          // Another account's user_id, an unknown chat: refused, whatever batch they share.
          jobs.push(post(client, chatId, w.userId, `stolen ${i}`, intruder.session).then((r) => ({ status: r.status, good: false })));
          jobs.push(post(client, otherChat, w.userId, `elsewhere ${i}`, w.session).then((r) => ({ status: r.status, good: false })));
          jobs.push(post(client, 'c'.repeat(32), w.userId, `nowhere ${i}`, w.session).then((r) => ({ status: r.status, good: false })));
        }
      }
      const results = await Promise.all(jobs);
      assert.deepEqual(results.filter((r) => r.good).map((r) => r.status), Array(30).fill(201));
      assert.deepEqual(results.filter((r) => !r.good).map((r) => r.status), Array(18).fill(404));
      const all = await wholeChat(client, chatId, owner.session, 30);
      await sleep(100);
      assert.equal((await rows(chatId)).length, 30);
      assert.ok(all.every((m) => m.text.startsWith('good ')));
      assert.equal((await rows(otherChat)).length, 0);
    });

    it('a retry with the same Idempotency-Key gets the first message_id and stores nothing new', async () => {
      const { client, owner, chatId, writers } = await chatWithWriters(1);
      const w = writers[0];
      const key = `key-${uniq()}`;
      const first = await postOk(client, chatId, w.userId, 'once', w.session, key);
      const again = await postOk(client, chatId, w.userId, 'once', w.session, key);
      assert.equal(again, first);
      const other = await postOk(client, chatId, w.userId, 'twice', w.session, `${key}-2`);
      assert.notEqual(other, first);
      const all = await wholeChat(client, chatId, owner.session, 2);
      await sleep(150);
      assert.deepEqual((await getPage(client, chatId, owner.session, 100)).messages.map((m) => m.message_id), [first, other]);
      assert.equal(all.length, 2);
    });

    it('concurrent retries with one Idempotency-Key all get one message_id; one row is stored', async () => {
      const { client, owner, chatId, writers } = await chatWithWriters(1);
      const w = writers[0];
      const key = uniq('race');
      const ids = await Promise.all(Array.from({ length: 12 }, () => postOk(client, chatId, w.userId, 'raced', w.session, key)));
      assert.equal(new Set(ids).size, 1, `answers differ: ${[...new Set(ids)].join(', ')}`);
      await wholeChat(client, chatId, owner.session, 1);
      await sleep(200);
      const stored = await rows(chatId);
      assert.equal(stored.length, 1);
      assert.equal(stored[0].id.replace(/-/g, ''), ids[0]);
    });

    it('keys are per account: the same key from another account is another message', async () => {
      const { client, owner, chatId, writers } = await chatWithWriters(2);
      const key = uniq('shared');
      const a = await postOk(client, chatId, writers[0].userId, 'from a', writers[0].session, key);
      const b = await postOk(client, chatId, writers[1].userId, 'from b', writers[1].session, key);
      assert.notEqual(a, b);
      assert.equal((await wholeChat(client, chatId, owner.session, 2)).length, 2);
    });

    it('answers 400 bad-parameters for an Idempotency-Key over 255 characters or with a non-ASCII character', async () => {
      const { client, chatId, writers } = await chatWithWriters(1);
      const w = writers[0];
      for (const key of ['k'.repeat(256), 'caf\u00e9']) {
        const res = await post(client, chatId, w.userId, 'x', w.session, key);
        assert.equal(res.status, 400);
        assert.equal((res.body as { message: string }).message, 'bad-parameters');
      }
      await postOk(client, chatId, w.userId, 'x', w.session, 'k'.repeat(255));
    });
  });
}

describe('synchronizer: a redelivered message that a synchronizer stored and never announced', function () {
  it('is announced when it comes back (once stored, same seq), so the poster\'s marker moves and the chat list shows nothing unread', async () => {
    const { client } = harness().app;
    const infra = harness().infra;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const userId = await joinChat(client, chatId, u.session, 'Poster');
    const account = parseId((await infra.db('users').where('user_name', u.userName).first('id')).id as string) as string;
    const queued = queuedMessage({ id: parseId(uuidv7()) as string, chatId: parseId(chatId) as string, memberId: parseId(userId) as string, accountId: account, userName: 'Poster', text: 'stored, then the process died' });
    // What a synchronizer killed between its commit and its acknowledgement leaves: the row, no event.
    const [row] = await infra.db.transaction(async (trx) => {
      await lockChats(trx, [queued.chat_id]);
      return storeBatch(trx, [{ id: queued.id, chatId: queued.chat_id, memberId: queued.member_id, accountId: queued.account_id, text: queued.text }]);
    });
    assert.equal(row.seq, 1);
    const seen: MessageStored[] = [];
    const undo = infra.events.react('message.stored', async (list) => {
      seen.push(...list.filter((e) => e.messageId === toWireId(queued.id)));
    });
    try {
      const sync = synchronizer({ ...infra, config: loadConfig(testEnv()) });
      const { poison } = await sync.handle([Buffer.from(JSON.stringify(queued))]);
      assert.deepEqual(poison, []);
      await waitUntil('the message is announced', async () => seen.length === 1, 5000);
      assert.deepEqual([seen[0].seq, seen[0].text, seen[0].userName, seen[0].chatId], [1, 'stored, then the process died', 'Poster', chatId]);
      assert.equal((await rows(chatId)).length, 1, 'stored twice');
      const list = (await client.get('/v1/chats', u.session).expect(200)).body as { chats: { chat_id: string; unread: number }[] };
      assert.equal(list.chats.find((c) => c.chat_id === chatId)?.unread, 0, 'the poster\'s own message counts as unread');
    } finally {
      undo();
    }
  });
});

describe('synchronizer: one message queued twice in one batch (an Idempotency-Key retry re-publishes under the first id)', function () {
  it('is stored once and takes one place: no hole in the chat order, the others\' unread count is the messages there are', async () => {
    const { client } = harness().app;
    const infra = harness().infra;
    const u = await buildUser(client);
    const reader = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const userId = await joinChat(client, chatId, u.session, 'Poster');
    await joinChat(client, chatId, reader.session, 'Reader');
    const account = parseId((await infra.db('users').where('user_name', u.userName).first('id')).id as string) as string;
    const queued = queuedMessage({ id: parseId(uuidv7()) as string, chatId: parseId(chatId) as string, memberId: parseId(userId) as string, accountId: account, userName: 'Poster', text: 'sent, retried' });
    const seen: MessageStored[] = [];
    const undo = infra.events.react('message.stored', async (list) => {
      seen.push(...list.filter((e) => e.chatId === chatId));
    });
    try {
      const sync = synchronizer({ ...infra, config: loadConfig(testEnv()) });
      const body = Buffer.from(JSON.stringify(queued));
      const { poison } = await sync.handle([body, Buffer.from(body)]);
      assert.deepEqual(poison, []);
      await waitUntil('the message is announced', async () => seen.length >= 1, 5000);
      await sleep(50);
      assert.deepEqual(seen.map((e) => [e.messageId, e.seq]), [[toWireId(queued.id), 1]], 'announced other than once at seq 1');
      assert.deepEqual((await rows(chatId)).map((r) => Number(r.seq)), [1]);
      const chat = await infra.db('chats').where('id', parseId(chatId)).first('last_seq');
      assert.equal(Number(chat.last_seq), 1, 'the chat counted a place for the copy');
      const list = (await client.get('/v1/chats', reader.session).expect(200)).body as { chats: { chat_id: string; unread: number }[] };
      assert.equal(list.chats.find((c) => c.chat_id === chatId)?.unread, 1, 'one message, counted unread more than once');
    } finally {
      undo();
    }
  });
});

describe('write path, MESSAGE_STORAGE_TYPE=no_storage', function () {
  this.timeout(30_000);
  let app: Running;
  const events: MessageStored[] = [];
  let undo: () => void;

  before(async () => {
    app = await startApp(harness().infra, { MESSAGE_STORAGE_TYPE: 'no_storage', NGINX_THROTTLING: '1' });
    undo = harness().infra.events.react('message.stored', async (list) => {
      events.push(...list);
    });
  });
  after(async () => {
    undo();
    await app.close();
  });

  it('answers 201 with a message_id, publishes message.stored with seq 0, stores nothing: pages are empty', async () => {
    const { client } = app;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const userId = await joinChat(client, chatId, u.session, 'Ann');
    const id = await postOk(client, chatId, userId, 'live only', u.session);
    const e = events.find((x) => x.messageId === id);
    assert.ok(e, 'no message.stored event');
    assert.deepEqual([e.seq, e.text, e.userName, e.chatId], [0, 'live only', 'Ann', chatId]);
    assert.deepEqual(await getPage(client, chatId, u.session, 10), { messages: [], next: { iterator: '0'.repeat(32) } });
    assert.equal((await rows(chatId)).length, 0);
  });

  it('a live-only post changes no stored page: a cached page stays cached (X-Cache: HIT) after it', async () => {
    const { client } = app;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const userId = await joinChat(client, chatId, u.session);
    const page = `/v1/chats/${chatId}/messages?limit=10`;
    await client.get(page, u.session).expect(200).expect('X-Cache', 'MISS');
    await client.get(page, u.session).expect(200).expect('X-Cache', 'HIT');
    await postOk(client, chatId, userId, 'live only', u.session);
    const after = await client.get(page, u.session).expect(200).expect('X-Cache', 'HIT');
    assert.deepEqual(after.body, { messages: [], next: { iterator: '0'.repeat(32) } });
  });

  // Until 2026-12-07 reading a live message answered 400 bad-cursor (it was
  // never stored), so the web client's unread badge never cleared.
  it('reading a live-only message is 200 with the unread count as it stands (0): nothing to mark, nothing counted', async () => {
    const { client } = app;
    const owner = await buildUser(client);
    const chatId = await buildChat(client, owner.session);
    const mine = await joinChat(client, chatId, owner.session, 'Own');
    const other = await buildUser(client);
    const theirs = await joinChat(client, chatId, other.session, 'Other');
    const id = await postOk(client, chatId, theirs, 'live only', other.session);
    await postOk(client, chatId, mine, 'mine, live only', owner.session);
    const list = await client.get('/v1/chats', owner.session).expect(200);
    const item = (list.body as { chats: { chat_id: string; unread: number }[] }).chats.find((c) => c.chat_id === chatId);
    assert.equal(item?.unread, 0);
    await client.post(`/v1/chats/${chatId}/read`, { message_id: id }, owner.session).expect(200, { unread: 0 });
    // Still refused: a malformed id, a chat the caller is not in.
    await client.post(`/v1/chats/${chatId}/read`, { message_id: 'xyz' }, owner.session).expect(400, { message: 'bad-cursor' });
    const stranger = await buildUser(client);
    await client.post(`/v1/chats/${chatId}/read`, { message_id: id }, stranger.session).expect(404, { message: 'chat-not-found' });
  });

  // Until 2026-12-07 nothing was sent (no marker moved), so the account's
  // other tabs, which had counted the message live, kept their badge.
  it('reading a live-only message tells every connection of the reader\'s account: a read frame with its message_id and the unread count', async () => {
    const { client } = app;
    const reader = await buildUser(client);
    const chatId = await buildChat(client, reader.session);
    await joinChat(client, chatId, reader.session, 'Reader');
    const writer = await buildUser(client);
    const theirs = await joinChat(client, chatId, writer.session, 'Writer');
    const sockets: TestSocket[] = [];
    try {
      const tabs = [await openResumed(app.client.port, reader.session, {}), await openResumed(app.client.port, reader.session, {})];
      const writerTab = await openResumed(app.client.port, writer.session, {});
      sockets.push(...tabs, writerTab);
      for (const s of sockets) s.sendJson({ type: 'probe' });
      for (const s of sockets) await s.next((f) => f.type === 'error');
      const id = await postOk(client, chatId, theirs, 'read me', writer.session);
      for (const s of sockets) await s.until('the live message', () => s.texts(chatId).includes('read me'));
      await client.post(`/v1/chats/${chatId}/read`, { message_id: id }, reader.session).expect(200, { unread: 0 });
      for (const s of tabs) {
        const f = await s.next((x) => x.type === 'read');
        assert.deepEqual(f, { type: 'read', chat_id: chatId, message_id: id, unread: 0 });
      }
      // Only the reader's account is told; a malformed id tells nobody.
      await client.post(`/v1/chats/${chatId}/read`, { message_id: 'xyz' }, reader.session).expect(400, { message: 'bad-cursor' });
      await sleep(300);
      assert.deepEqual(writerTab.of('read'), []);
      for (const s of tabs) assert.equal(s.of('read').length, 1);
    } finally {
      for (const s of sockets) await s.close();
    }
  });

  it('still refuses a non-member (404) and bad input (400)', async () => {
    const { client } = app;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const userId = await joinChat(client, chatId, u.session);
    const other = await buildUser(client);
    // `other` may not read the chat: not told that it exists.
    await post(client, chatId, userId, 'x', other.session).then((r) => assert.deepEqual([r.status, r.body], [404, { message: 'chat-not-found' }]));
    await post(client, chatId, userId, '', u.session).then((r) => assert.equal(r.status, 400));
  });

  it('a retry with the same Idempotency-Key, also concurrent, gets the first message_id and is delivered once', async () => {
    const { client } = app;
    const u = await buildUser(client);
    const chatId = await buildChat(client, u.session);
    const userId = await joinChat(client, chatId, u.session);
    const key = uniq('live');
    const ids = await Promise.all(Array.from({ length: 8 }, () => postOk(client, chatId, userId, 'live once', u.session, key)));
    ids.push(await postOk(client, chatId, userId, 'live once', u.session, key));
    assert.equal(new Set(ids).size, 1);
    assert.equal(events.filter((e) => e.messageId === ids[0]).length, 1);
  });
});

describe('write path with AUTH_DISABLED=1: keys are per user_id', function () {
  let app: Running;
  before(async () => {
    app = await startApp(harness().infra, { AUTH_DISABLED: '1', NGINX_THROTTLING: '1' });
  });
  after(() => app.close());

  it('the same key from the same user_id is one message, from another user_id another', async () => {
    const { client } = app;
    const chatId = await buildChat(client);
    const a = await joinChat(client, chatId, undefined, uniq('a'));
    const b = await joinChat(client, chatId, undefined, uniq('b'));
    const key = uniq('k');
    const first = await postOk(client, chatId, a, 'one', undefined, key);
    assert.equal(await postOk(client, chatId, a, 'one', undefined, key), first);
    assert.notEqual(await postOk(client, chatId, b, 'one', undefined, key), first);
    assert.equal((await rows(chatId)).length, 2);
  });
});
