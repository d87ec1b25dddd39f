import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EXACT_SEARCH_SQL, nearSearchSql, searchExact, searchFuzzy, withDeadline } from '../messenger/db/search';
import { storeBatch } from '../messenger/db/messages';
import { parseId, uuidv7 } from '../messenger/ids';
import { TaskStore } from '../messenger/apps/search/tasks';
import { SearchWorker, type SearchQueries } from '../messenger/apps/search/worker';
import { loadConfig } from '../messenger/config';
import { createLogger } from '../messenger/infra/logger';
import { MODE, deleteQueues, testEnv } from './helpers/env';
import { harness, startApp } from './helpers/harness';
import { buildChat, buildUser, joinChat, postMessage, type TestUser, badParameters } from './helpers/factories';
import { searchAll, startSearch, waitForTask, type SearchPage } from './helpers/search';
import { waitUntil } from './helpers/wait';

/** A word no other test writes. */
function token(): string {
  return `zq${randomBytes(5).toString('hex')}`;
}

async function memberChat(u: TestUser) {
  const { client } = harness().app;
  const chatId = await buildChat(client, u.session);
  const userId = await joinChat(client, chatId, u.session);
  return { chatId, userId };
}

async function accountId(userName: string): Promise<string> {
  const row = await harness().infra.db('users').where({ user_name: userName }).first('id');
  return row.id as string;
}

describe('POST /v1/chats/search', () => {
  it('returns 201 with a task_id; the task reaches SUCCESS and finds the message', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const word = token();
    const id = await postMessage(client, chatId, userId, `the ${word} is here`, u.session);
    const found = await searchAll(client, u.session, word);
    assert.deepEqual(found.map((m) => [m.message_id, m.chat_id, m.text]), [[id, chatId, `the ${word} is here`]]);
    assert.ok(!Number.isNaN(Date.parse(found[0].created_at)));
  });

  for (const phrase of ['abc', '  ab  ', '', 'аб']) {
    it(`returns 400 bad-parameters for the phrase ${JSON.stringify(phrase)} (3 or fewer characters)`, async () => {
      const { client } = harness().app;
      const u = await buildUser(client);
      await client.post('/v1/chats/search', { message: phrase }, u.session).expect(400).expect(badParameters);
    });
  }

  /** `n` distinct two-letter words of a token's letters: the most words a phrase of 3n - 1 characters can hold. */
  function manyWords(n: number): string {
    const letters = 'abcdefghijklmnopqrstuvwxyz';
    return Array.from({ length: n }, (_, i) => `${letters[Math.floor(i / 26) % 26]}${letters[i % 26]}`).join(' ');
  }

  it('refuses a phrase over 1000 characters with 400 bad-parameters naming the limit, and records no task', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const kv = harness().infra.kv;
    const set = kv.set.bind(kv);
    const written: string[] = [];
    kv.set = async (key, value, ttl) => {
      written.push(key);
      return set(key, value, ttl);
    };
    try {
      // 20,000 words made the consumer fail every attempt (PostgreSQL: stack depth limit exceeded).
      for (const phrase of [`${'x'.repeat(1000)}y`, `${manyWords(333)} abc`, 'word '.repeat(20_000)]) {
        const res = await client.post('/v1/chats/search', { message: phrase }, u.session).expect(400).expect(badParameters);
        assert.equal((res.body as { detail?: string }).detail, 'message: a phrase of 4 to 1000 characters', `${phrase.length} characters`);
      }
    } finally {
      kv.set = set;
    }
    assert.deepEqual(written.filter((k) => k.includes('task:')), []);
  });

  it('runs a phrase of exactly 1000 characters (333 distinct words) to SUCCESS and finds the message holding it', async function () {
    this.timeout(60_000);
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const phrase = `${manyWords(333)} z`;
    assert.equal(phrase.length, 1000);
    const text = `${token()} ${phrase}`;
    const id = await postMessage(client, chatId, userId, text, u.session);
    const found = await searchAll(client, u.session, phrase);
    assert.deepEqual(found.map((m) => [m.message_id, m.text]), [[id, text]]);
    // Characters are code points: 1000 emoji (2000 UTF-16 units) are within the limit.
    assert.equal(await waitForTask(client, u.session, await startSearch(client, u.session, '😀'.repeat(1000))), 'SUCCESS');
  });

  it('returns 400 bad-parameters without a phrase, and 401 without a session', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    await client.post('/v1/chats/search', {}, u.session).expect(400).expect(badParameters);
    await client.post('/v1/chats/search', { message: 'hello' }).expect(401, { message: 'auth-failed' });
  });

  it('searches every chat the caller is a member of, including messages others wrote', async () => {
    const { client } = harness().app;
    const me = await buildUser(client);
    const friend = await buildUser(client);
    const word = token();
    const a = await memberChat(me);
    const friendsChat = await buildChat(client, friend.session);
    const friendId = await joinChat(client, friendsChat, friend.session);
    await joinChat(client, friendsChat, me.session);
    const mine = await postMessage(client, a.chatId, a.userId, `${word} one`, me.session);
    const theirs = await postMessage(client, friendsChat, friendId, `${word} two`, friend.session);
    const found = await searchAll(client, me.session, word);
    assert.deepEqual(new Set(found.map((m) => m.message_id)), new Set([mine, theirs]));
  });

  it('never searches chats the caller is not a member of (not even ones it created without joining)', async () => {
    const { client } = harness().app;
    const me = await buildUser(client);
    const other = await buildUser(client);
    const word = token();
    const otherChat = await memberChat(other);
    await postMessage(client, otherChat.chatId, otherChat.userId, `${word} secret`, other.session);
    const createdOnly = await buildChat(client, me.session);
    const someone = await joinChat(client, createdOnly, other.session);
    await postMessage(client, createdOnly, someone, `${word} in a chat I made`, other.session);
    assert.deepEqual(await searchAll(client, me.session, word), []);
  });

  it('matches case-insensitively, in Russian and English alike', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    // A fresh account sees only its own chats, so plain words are unambiguous here.
    const ru = await postMessage(client, chatId, userId, 'Всем ПРИВЕТ, мир!', u.session);
    const en = await postMessage(client, chatId, userId, 'Hello Wonderful World', u.session);
    assert.deepEqual((await searchAll(client, u.session, 'всем привет')).map((m) => m.message_id), [ru]);
    assert.deepEqual((await searchAll(client, u.session, 'HELLO wonderful')).map((m) => m.message_id), [en]);
  });

  it('finds words with a typo or two', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const id = await postMessage(client, chatId, userId, 'the quarterly databases migration finished', u.session);
    await postMessage(client, chatId, userId, 'lunch at noon', u.session);
    const found = await searchAll(client, u.session, 'quartrly databses');
    assert.deepEqual(found.map((m) => m.message_id), [id]);
  });

  it('a two-word search does not return messages that contain only one of the two words', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    // A fresh account sees only its own chats, so plain words are unambiguous here.
    const exact = await postMessage(client, chatId, userId, 'the release notes are out', u.session);
    await postMessage(client, chatId, userId, 'release the kraken', u.session);
    await postMessage(client, chatId, userId, 'notes for lunch at noon', u.session);
    const apart = await postMessage(client, chatId, userId, 'notes from the relase meeting', u.session);
    await postMessage(client, chatId, userId, 'nothing relevant here', u.session);
    const found = await searchAll(client, u.session, 'release notes');
    // Both words present (one with a typo, in another order) is a near match; newest first.
    assert.deepEqual(found.map((m) => m.message_id), [apart, exact]);
  });

  it('keeps exact phrase matches before near matches when there are more than 100 of both', async function () {
    this.timeout(60_000);
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const word = token();
    // One changed character: a near match, not an exact one.
    const typo = word.slice(0, -1) + (word.endsWith('a') ? 'b' : 'a');
    // 60 exact matches, older than 60 near matches; fast with SQL.
    await db.raw(
      `INSERT INTO messages (chat_id, member_id, seq, text, created_at)
       SELECT ?, ?, g, CASE WHEN g <= 60 THEN ? || ' exact ' || g ELSE ? || ' near ' || (g - 60) END,
              now() - make_interval(secs => 1000 - g)
         FROM generate_series(1, 120) AS g`,
      [chatId, userId, word, typo],
    );
    await db.raw('UPDATE chats SET last_seq = 120 WHERE id = ?', [chatId]);
    const found = await searchAll(client, u.session, word, 30);
    assert.equal(found.length, 100);
    const expected = [
      ...Array.from({ length: 40 }, (_, i) => `${typo} near ${60 - i}`),
      ...Array.from({ length: 60 }, (_, i) => `${word} exact ${60 - i}`),
    ];
    assert.deepEqual(found.map((m) => m.text), expected);
  });

  it('a word within the typo tolerance matches; one sharing only a few trigrams does not', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const hello = await postMessage(client, chatId, userId, 'hello world', u.session);
    await postMessage(client, chatId, userId, 'the helicopter landed', u.session);
    // 'hallo' against 'hello': one typo in five letters (strict word similarity 0.33).
    assert.deepEqual((await searchAll(client, u.session, 'hallo')).map((m) => m.message_id), [hello]);
    // 'hello' against 'helicopter': three of fourteen trigrams in common (0.21), not a typo.
    assert.deepEqual((await searchAll(client, u.session, 'hello')).map((m) => m.message_id), [hello]);
  });

  it('finds words typed with two neighbouring letters swapped; every word must still match', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    // A swap leaves a short word few of its trigrams: 'mnago' and 'mango' are 0.2 apart, under the 0.3 tolerance.
    const mango = await postMessage(client, chatId, userId, 'a ripe mango for lunch', u.session);
    const hello = await postMessage(client, chatId, userId, 'Hello, World!', u.session);
    await postMessage(client, chatId, userId, 'mango smoothie', u.session);
    assert.deepEqual((await searchAll(client, u.session, 'hlelo wrold')).map((m) => m.message_id), [hello]);
    // Four letters are enough for a swap to count ('rpie' for 'ripe'); the message lacking 'ripe' is not a result.
    assert.deepEqual((await searchAll(client, u.session, 'mnago rpie')).map((m) => m.message_id), [mango]);
    assert.deepEqual((await searchAll(client, u.session, 'mnago lnuch smoothie')).map((m) => m.message_id), []);
  });

  it('a swap counts in words of four letters or more, not in shorter ones (cat and act are two words)', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const cat = await postMessage(client, chatId, userId, 'the cat sleeps', u.session);
    await postMessage(client, chatId, userId, 'an act in two parts', u.session);
    // 'slepes' for 'sleeps': 0.27 in trigrams, found as a swap; 'act' is not taken for 'cat'.
    assert.deepEqual((await searchAll(client, u.session, 'cat slepes')).map((m) => m.message_id), [cat]);
    assert.deepEqual((await searchAll(client, u.session, 'act slepes')).map((m) => m.message_id), []);
  });

  it('finds a phrase of emoji or symbols', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const waves = await postMessage(client, chatId, userId, 'hi 👋🏽👋🏽 there', u.session);
    await postMessage(client, chatId, userId, 'hi 👋👋 there', u.session);
    await postMessage(client, chatId, userId, 'party 🎉', u.session);
    const arrows = await postMessage(client, chatId, userId, 'the spaceship <=> operator', u.session);
    await postMessage(client, chatId, userId, 'the fat arrow => operator', u.session);
    assert.deepEqual((await searchAll(client, u.session, '👋🏽👋🏽')).map((m) => m.message_id), [waves]);
    assert.deepEqual((await searchAll(client, u.session, '<=> operator')).map((m) => m.message_id), [arrows]);
  });

  it('each result names its author: user_id and user_name in the chat', async () => {
    const { client } = harness().app;
    const me = await buildUser(client);
    const friend = await buildUser(client);
    const word = token();
    const chatId = await buildChat(client, me.session);
    const myId = await joinChat(client, chatId, me.session, 'Me Myself');
    const friendId = await joinChat(client, chatId, friend.session, 'Good Friend');
    const mine = await postMessage(client, chatId, myId, `${word} mine`, me.session);
    const theirs = await postMessage(client, chatId, friendId, `${word} theirs`, friend.session);
    const found = await searchAll(client, me.session, word);
    assert.deepEqual(
      found.map((m) => [m.message_id, m.user_id, m.user_name]),
      [
        [theirs, friendId, 'Good Friend'],
        [mine, myId, 'Me Myself'],
      ],
    );
    for (const m of found) assert.match(m.user_id, /^[0-9a-f]{32}$/);
  });

  it('keeps at most 100 results, newest first, and pages through them without gaps or repeats', async function () {
    this.timeout(60_000);
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const word = token();
    const ids: string[] = [];
    for (let i = 0; i < 110; i++) ids.push(await postMessage(client, chatId, userId, `${word} number ${i}`, u.session));
    const found = await searchAll(client, u.session, word, 30);
    assert.equal(found.length, 100);
    assert.deepEqual(found.map((m) => m.message_id), ids.slice(10).reverse());
  });

  it('orders messages stored in one batch (one created_at) by their place in the chat, and keeps the 100 latest of them', async function () {
    this.timeout(30_000);
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const word = token();
    // One group commit (or synchronizer batch) gives its messages one time; their ids come from the
    // posting processes and need not follow the chat order: here they run against it.
    const now = Date.now();
    const ids = Array.from({ length: 102 }, () => parseId(uuidv7(now)) as string).sort().reverse();
    const stored = await storeBatch(harness().infra.db, ids.map((id, i) => ({ id, chatId: parseId(chatId) as string, memberId: parseId(userId) as string, accountId: null, text: `${word} in a batch ${i}` })));
    assert.equal(new Set(stored.map((r) => r.created_at.getTime())).size, 1);
    const chatOrder = (await client.get(`/v1/chats/${chatId}/messages?limit=1000`, u.session).expect(200)).body as { messages: { message_id: string }[] };
    const found = await searchAll(client, u.session, word, 30);
    assert.deepEqual(found.map((m) => m.message_id), chatOrder.messages.map((m) => m.message_id).reverse().slice(0, 100));
  });

  it('a task stores its results\' ids, not their texts: what it keeps does not grow with the messages found; pages still carry them whole', async function () {
    this.timeout(30_000);
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const word = token();
    // Three messages of 16,000 emoji: 64 kB each. Kept whole, every search for them held 192 kB for
    // SEARCH_TASK_TTL_SECONDS (100 such results: 6 MB per task, however many tasks a client starts).
    const texts = [0, 1, 2].map((i) => `${word} ${i} ${'\u{1F600}'.repeat(16_000)}`);
    const ids: string[] = [];
    for (const text of texts) ids.push(await postMessage(client, chatId, userId, text, u.session));
    const taskId = await startSearch(client, u.session, word);
    assert.equal(await waitForTask(client, u.session, taskId), 'SUCCESS');
    const kept = await harness().infra.kv.get(`task:${taskId}:results`);
    assert.ok(kept !== null && kept.length < 200, `the task keeps ${kept?.length} characters for 3 results`);
    const page = (await client.get(`/v1/chats/search/${taskId}/messages?limit=2`, u.session).expect(200)).body as SearchPage;
    assert.deepEqual(page.messages.map((m) => [m.message_id, m.chat_id, m.user_id, m.text]), [[ids[2], chatId, userId, texts[2]], [ids[1], chatId, userId, texts[1]]]);
    assert.equal(page.next.iterator, ids[1]);
    const rest = (await client.get(`/v1/chats/search/${taskId}/messages?limit=2&from=${ids[1]}`, u.session).expect(200)).body as SearchPage;
    assert.deepEqual(rest.messages.map((m) => m.text), [texts[0]]);
  });

  it('an empty results page repeats the cursor; the all-zero cursor means the start', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const word = token();
    const id = await postMessage(client, chatId, userId, `${word}!`, u.session);
    const taskId = await startSearch(client, u.session, word);
    assert.equal(await waitForTask(client, u.session, taskId), 'SUCCESS');
    const zero = '0'.repeat(32);
    const first = (await client.get(`/v1/chats/search/${taskId}/messages?limit=5&from=${zero}`, u.session).expect(200)).body as SearchPage;
    assert.deepEqual(first.messages.map((m) => m.message_id), [id]);
    const after = (await client.get(`/v1/chats/search/${taskId}/messages?limit=5&from=${id}`, u.session).expect(200)).body as SearchPage;
    assert.deepEqual(after, { messages: [], next: { iterator: id } });
    const none = await searchAll(client, u.session, token());
    assert.deepEqual(none, []);
  });
});

describe('search tasks', () => {
  it('GET status and messages answer 404 task-not-found for another account\'s task, an unknown or a malformed id', async () => {
    const { client } = harness().app;
    const owner = await buildUser(client);
    const stranger = await buildUser(client);
    const taskId = await startSearch(client, owner.session, 'anything at all');
    await waitForTask(client, owner.session, taskId);
    for (const [session, id] of [[stranger.session, taskId], [owner.session, 'f'.repeat(32)], [owner.session, 'nope']]) {
      await client.get(`/v1/chats/search/status/${id}`, session).expect(404, { message: 'task-not-found' });
      await client.get(`/v1/chats/search/${id}/messages?limit=10`, session).expect(404, { message: 'task-not-found' });
    }
  });

  it('refuses a search past SEARCH_MAX_UNFINISHED unfinished tasks of the account with 429 too-many-searches, recording nothing; a finished task frees its place', async () => {
    const { client } = harness().app;
    const { kv } = harness().infra;
    const u = await buildUser(client);
    const owner = await accountId(u.userName);
    const store = new TaskStore(kv, 300);
    const max = loadConfig(testEnv()).search.maxUnfinished;
    assert.equal(max, 20);
    // Unfinished tasks as a flood leaves them while no consumer runs: WAITING (one IN_PROCESS).
    const waiting = [];
    for (let i = 0; i < max; i++) waiting.push(await store.create(randomBytes(16).toString('hex'), owner, `waiting ${i}`));
    await store.start(waiting[0]);
    const set = kv.set.bind(kv);
    const written: string[] = [];
    kv.set = async (key, value, ttl) => {
      written.push(key);
      return set(key, value, ttl);
    };
    try {
      for (let i = 0; i < 3; i++) {
        const res = await client.post('/v1/chats/search', { message: 'one search too many' }, u.session).expect(429, { message: 'too-many-searches' });
        assert.equal(res.headers['retry-after'], '5');
      }
    } finally {
      kv.set = set;
    }
    assert.deepEqual(written, [], 'a refused search records nothing');
    // Another account is not held back.
    const other = await buildUser(client);
    assert.equal(await waitForTask(client, other.session, await startSearch(client, other.session, 'another account')), 'SUCCESS');
    // One finished task frees one place; the search that takes it frees it again when the consumer finishes it.
    await store.fail(waiting[0]);
    assert.equal(await waitForTask(client, u.session, await startSearch(client, u.session, 'now there is room')), 'SUCCESS');
    await store.create(randomBytes(16).toString('hex'), owner, 'the place taken again');
    await client.post('/v1/chats/search', { message: 'no room again' }, u.session).expect(429, { message: 'too-many-searches' });
  });

  it('answers 400 task-not-complete before SUCCESS and 400 task-failed after FAILED', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const store = new TaskStore(harness().infra.kv, 300);
    const owner = await accountId(u.userName);
    const waiting = randomBytes(16).toString('hex');
    const task = await store.create(waiting, owner, 'never queued');
    await client.get(`/v1/chats/search/status/${waiting}`, u.session).expect(200, { status: 'WAITING' });
    await client.get(`/v1/chats/search/${waiting}/messages?limit=10`, u.session).expect(400, { message: 'task-not-complete' });
    await store.start(task);
    await client.get(`/v1/chats/search/status/${waiting}`, u.session).expect(200, { status: 'IN_PROCESS' });
    await client.get(`/v1/chats/search/${waiting}/messages?limit=10`, u.session).expect(400, { message: 'task-not-complete' });
    await store.fail(task);
    await client.get(`/v1/chats/search/status/${waiting}`, u.session).expect(200, { status: 'FAILED' });
    await client.get(`/v1/chats/search/${waiting}/messages?limit=10`, u.session).expect(400, { message: 'task-failed' });
  });

  it('answers 400 bad-parameters for a bad limit and 400 bad-cursor for a cursor not among the results', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const word = token();
    await postMessage(client, chatId, userId, word, u.session);
    const other = await postMessage(client, chatId, userId, 'unrelated text', u.session);
    const taskId = await startSearch(client, u.session, word);
    await waitForTask(client, u.session, taskId);
    for (const limit of ['0', '1001', 'x']) {
      await client.get(`/v1/chats/search/${taskId}/messages?limit=${limit}`, u.session).expect(400).expect(badParameters);
    }
    for (const from of [other, 'bad']) {
      await client.get(`/v1/chats/search/${taskId}/messages?limit=5&from=${from}`, u.session).expect(400, { message: 'bad-cursor' });
    }
  });

  it('a finished task and its results expire after SEARCH_TASK_TTL_SECONDS', async function () {
    this.timeout(15_000);
    // Its own queue, so that its own consumer (with the short TTL) runs the task.
    const queue = `${testEnv().SEARCH_QUEUE ?? 'q'}.ttl`;
    const short = await startApp(harness().infra, { SEARCH_TASK_TTL_SECONDS: '1', SEARCH_QUEUE: queue });
    try {
      const { client } = short;
      const u = await buildUser(client);
      const taskId = await startSearch(client, u.session, 'expiring search');
      assert.equal(await waitForTask(client, u.session, taskId), 'SUCCESS');
      await waitUntil('the task to expire', async () => (await client.get(`/v1/chats/search/status/${taskId}`, u.session)).status === 404, 5000);
      await client.get(`/v1/chats/search/status/${taskId}`, u.session).expect(404, { message: 'task-not-found' });
      await client.get(`/v1/chats/search/${taskId}/messages?limit=1`, u.session).expect(404, { message: 'task-not-found' });
    } finally {
      await short.close();
      if (MODE === 'services') await deleteQueues(queue);
    }
  });

  it('with the search app off, its operations answer 404 not-found', async () => {
    const off = await startApp(harness().infra, { APPS: 'auth,chats,messages' });
    try {
      const u = await buildUser(off.client);
      await off.client.post('/v1/chats/search', { message: 'hello there' }, u.session).expect(404, { message: 'not-found' });
    } finally {
      await off.close();
    }
  });
});

/** A worker over the shared database and store, with `settings` and some queries replaced. */
function testWorker(settings: Record<string, string>, queries: Partial<SearchQueries> = {}) {
  const { db, kv } = harness().infra;
  const store = new TaskStore(kv, 300);
  const config = loadConfig(testEnv(settings)).search;
  const worker = new SearchWorker(db, store, config, createLogger('silent'), { exact: searchExact, near: searchFuzzy, ...queries });
  return { store, worker, config };
}

const taskMessage = (id: string): Buffer => Buffer.from(JSON.stringify({ task_id: id }));

describe('the search worker', () => {
  it('a task that keeps failing ends FAILED after exactly SEARCH_MAX_ATTEMPTS runs', async () => {
    let runs = 0;
    const { store, worker, config } = testWorker({ SEARCH_MAX_ATTEMPTS: '3' }, {
      exact: async () => {
        runs++;
        throw new Error('the database said no');
      },
    });
    assert.equal(config.maxAttempts, 3);
    const u = await buildUser(harness().app.client);
    const id = randomBytes(16).toString('hex');
    await store.create(id, await accountId(u.userName), 'always failing');
    // Each failed run puts the message back; the queue delivers it again.
    let failures = 0;
    for (let delivery = 0; delivery < 10; delivery++) {
      try {
        await worker.handle(taskMessage(id));
        break;
      } catch {
        failures++;
      }
    }
    assert.equal(failures, 3, 'every run but the last delivery fails');
    assert.equal(runs, 3, 'the query ran once per attempt');
    const record = await store.get(id);
    assert.equal(record?.status, 'FAILED');
    assert.equal(record?.attempts, 3);
  });

  for (const [code, what] of [
    ['54001', 'stack depth limit exceeded'],
    ['22021', 'invalid byte sequence for encoding "UTF8": 0x00'],
  ]) {
    it(`a task PostgreSQL refuses for what it asks (SQLSTATE ${code}: ${what}) ends FAILED after one run, not SEARCH_MAX_ATTEMPTS`, async () => {
      let runs = 0;
      const { store, worker } = testWorker({ SEARCH_MAX_ATTEMPTS: '3' }, {
        exact: async () => {
          runs++;
          throw Object.assign(new Error(what), { code });
        },
      });
      const u = await buildUser(harness().app.client);
      const id = randomBytes(16).toString('hex');
      await store.create(id, await accountId(u.userName), 'the same every time');
      // Resolves: the message is acknowledged, not put back for another run.
      await worker.handle(taskMessage(id));
      assert.equal(runs, 1);
      const record = await store.get(id);
      assert.equal(record?.status, 'FAILED');
      assert.equal(record?.attempts, 1);
    });
  }

  it('a task past its deadline during the near-match phase ends SUCCESS with the exact matches it found', async function () {
    this.timeout(20_000);
    const { client } = harness().app;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const word = token();
    const typo = word.slice(0, -1) + (word.endsWith('a') ? 'b' : 'a');
    const older = await postMessage(client, chatId, userId, `${word} first`, u.session);
    const newer = await postMessage(client, chatId, userId, `${word} second`, u.session);
    await postMessage(client, chatId, userId, `${typo} a near match`, u.session);
    const SLOW_MS = 3000;
    let nearStarted = 0;
    const { store, worker } = testWorker({ SEARCH_TIMEOUT_MS: '500' }, {
      near: async (db, ...args) => {
        nearStarted++;
        const timeoutMs = args[4];
        if (MODE === 'services') {
          // A statement slower than the deadline: PostgreSQL cancels it (statement_timeout).
          await withDeadline(db, timeoutMs, (trx) => trx.raw(`SELECT pg_sleep(${SLOW_MS / 1000})`));
        } else {
          // PGlite has no statement_timeout: only the worker's own timer can stop the wait.
          await new Promise((r) => setTimeout(r, SLOW_MS));
        }
        return searchFuzzy(db, ...args);
      },
    });
    const id = randomBytes(16).toString('hex');
    await store.create(id, await accountId(u.userName), word);
    const started = Date.now();
    await worker.handle(taskMessage(id));
    const took = Date.now() - started;
    assert.equal(nearStarted, 1, 'the near-match phase ran');
    assert.ok(took < SLOW_MS - 1000, `the task kept its deadline (took ${took} ms)`);
    assert.equal((await store.get(id))?.status, 'SUCCESS');
    assert.deepEqual(await store.results(id), [newer, older]);
  });
});

describe('the search query', () => {
  it('uses the full-text GIN index, not a sequential scan, over a filled table', async function () {
    this.timeout(60_000);
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const { chatId, userId } = await memberChat(u);
    const rare = token();
    // From empty pending lists, so the lists end as these inserts leave them whatever earlier tests inserted
    // (how full the 64 kB full-text list ends up decides the plan; it used to vary with the tests before this one).
    await db.raw(`SELECT gin_clean_pending_list('messages_text_fts_idx'::regclass), gin_clean_pending_list('messages_text_trgm_idx'::regclass)`);
    // Fill fast with SQL: 20,000 ordinary messages and a few with a rare word.
    await db.raw(
      `INSERT INTO messages (chat_id, member_id, seq, text)
       SELECT ?, ?, g, CASE WHEN g % 5000 = 0 THEN 'note ' || ? ELSE 'ordinary chatter number ' || g END
         FROM generate_series(1, 20000) AS g`,
      [chatId, userId, rare],
    );
    await db.raw('UPDATE chats SET last_seq = 20000 WHERE id = ?', [chatId]);
    // ANALYZE only, no VACUUM: the full-text index's pending list (migration 009, 64 kB) is left as the inserts
    // filled it, so the plan is checked with the list as a busy chat leaves it, not emptied.
    await db.raw('ANALYZE messages');
    const owner = await accountId(u.userName);
    const res = (await db.raw(`EXPLAIN ${EXACT_SEARCH_SQL}`, [owner, rare, 100])) as { rows: Record<string, string>[] };
    const plan = res.rows.map((r) => Object.values(r)[0]).join('\n');
    assert.match(plan, /messages_text_fts_idx/, plan);
    assert.doesNotMatch(plan, /Seq Scan on messages/, plan);
    // The near-match query (every word within the typo tolerance) reads messages
    // through an index: the trigram index, or (when the planner expects the
    // caller's chats to be small, as with many small chats in the table) the
    // per-chat index over just those chats. Never a scan of the whole table.
    const near = nearSearchSql(`${rare} note`);
    const nearRes = (await db.raw(`EXPLAIN ${near.sql}`, [owner, ...near.terms, [], 100])) as { rows: Record<string, string>[] };
    const nearPlan = nearRes.rows.map((r) => Object.values(r)[0]).join('\n');
    assert.match(nearPlan, /(messages_text_trgm_idx|Index Scan on messages_chat_seq_uq|Index Scan using messages_chat_seq_uq on messages)/, nearPlan);
    assert.doesNotMatch(nearPlan, /Seq Scan on messages/, nearPlan);
    // A word with swapped letters ('ntoe') is matched by either index: by the trigram one within the tolerance, by the
    // full-text one as one of its swapped spellings: a BitmapOr of the two (the planner may AND in the other word's or
    // the caller's chats' bitmap, or recheck the other word on the few rows found). As for the query above, the
    // planner may instead read the caller's chats through the per-chat index when it expects them to be small (in
    // the whole embedded suite, whose many small chats make the average chat a dozen rows). Never a scan of the table.
    const swapped = nearSearchSql(`${rare} ntoe`);
    const swappedRes = (await db.raw(`EXPLAIN ${swapped.sql}`, [owner, ...swapped.terms, [], 100])) as { rows: Record<string, string>[] };
    const swappedPlan = swappedRes.rows.map((r) => Object.values(r)[0]).join('\n');
    if (!/messages_chat_seq_uq/.test(swappedPlan)) {
      assert.match(swappedPlan, /BitmapOr[\s\S]*Bitmap Index Scan on messages_text_trgm_idx[\s\S]*Bitmap Index Scan on messages_text_fts_idx[^\n]*\n[^\n]*'note'/, swappedPlan);
    }
    assert.doesNotMatch(swappedPlan, /Seq Scan on messages/, swappedPlan);
    const found = await searchAll(client, u.session, rare);
    assert.equal(found.length, 4);
  });
});
