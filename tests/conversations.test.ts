import assert from 'node:assert/strict';
import { harness, startApp, type Client } from './helpers/harness';
import { badParameters, buildChat, buildUser, getPage, joinChat, postMessage, uniq, type TestUser } from './helpers/factories';
import { CHATS_OF_ACCOUNT_SQL, chatsOfAccountParams } from '../messenger/db/chats';
import { NAMES_BY_PREFIX_SQL, likePrefix } from '../messenger/db/users';
import * as chatListMigration from '../migrations/007_chat_list';
import * as lastMessageJson from '../migrations/012_chat_last_message_json';
import { toWireId } from '../messenger/ids';
import type { EventMap, EventName } from '../messenger/events';

interface LastMessage {
  message_id: string;
  user_id: string;
  user_name: string;
  text: string;
  created_at: string;
}
interface ChatItem {
  chat_id: string;
  chat_name: string;
  user_id: string | null;
  direct: boolean;
  last_message: LastMessage | null;
  unread: number;
}
interface Member {
  user_id: string;
  user_name: string;
  online: boolean;
}

async function listChats(client: Client, session: string, limit?: number): Promise<ChatItem[]> {
  const q = limit === undefined ? '' : `?limit=${limit}`;
  const res = await client.get(`/v1/chats${q}`, session).expect(200);
  return (res.body as { chats: ChatItem[] }).chats;
}

async function chatOf(client: Client, session: string, chatId: string): Promise<ChatItem> {
  const found = (await listChats(client, session, 1000)).find((c) => c.chat_id === chatId);
  assert.ok(found, `chat ${chatId} is in the list`);
  return found;
}

async function read(client: Client, session: string, chatId: string, messageId: string): Promise<number> {
  const res = await client.post(`/v1/chats/${chatId}/read`, { message_id: messageId }, session).expect(200);
  return (res.body as { unread: number }).unread;
}

async function direct(client: Client, session: string, userName: string): Promise<{ chat_id: string; user_id: string }> {
  const res = await client.post('/v1/direct', { user_name: userName }, session).expect(201);
  return res.body as { chat_id: string; user_id: string };
}

async function members(client: Client, session: string | undefined, chatId: string): Promise<Member[]> {
  const res = await client.get(`/v1/chats/${chatId}/users`, session).expect(200);
  return (res.body as { users: Member[] }).users;
}

async function searchUsers(client: Client, session: string, query: string): Promise<string[]> {
  const res = await client.get(`/v1/users?${query}`, session).expect(200);
  return (res.body as { users: { user_name: string }[] }).users.map((u) => u.user_name);
}

async function accountOf(u: TestUser): Promise<string> {
  const row = (await harness().infra.db('users').where('user_name', u.userName).first('id')) as { id: string };
  return row.id;
}

async function markerSeq(u: TestUser, chatId: string): Promise<number | undefined> {
  const row = (await harness().infra.db('read_markers').where({ account_id: await accountOf(u), chat_id: chatId }).first('seq')) as { seq: string | number } | undefined;
  return row === undefined ? undefined : Number(row.seq);
}

/** Collects the events of one kind published on the shared bus (every instance's subscribers). */
function collect<K extends EventName>(name: K) {
  const seen: EventMap[K][] = [];
  const undo = harness().infra.events.subscribe(name, (e) => {
    seen.push(e);
  });
  return {
    seen,
    /** Waits until `pred` holds for some collected event; fails after a few seconds. */
    async until(pred: (e: EventMap[K]) => boolean, what: string): Promise<EventMap[K]> {
      const deadline = Date.now() + 5000;
      for (;;) {
        const hit = seen.find(pred);
        if (hit !== undefined) return hit;
        if (Date.now() > deadline) throw new Error(`no ${name} event ${what}; saw ${JSON.stringify(seen)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    stop: undo,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Two accounts that share a group chat (both joined) and a direct chat. */
async function twoAccounts() {
  const { client } = harness().app;
  const a = await buildUser(client);
  const b = await buildUser(client);
  const group = await buildChat(client, a.session, uniq('group'));
  const aInGroup = await joinChat(client, group, a.session, 'Alice');
  const bInGroup = await joinChat(client, group, b.session, 'Bob');
  const d = await direct(client, a.session, b.userName);
  const bDirect = await direct(client, b.session, a.userName);
  return { client, a, b, group, aInGroup, bInGroup, directChat: d.chat_id, aDirect: d.user_id, bDirect: bDirect.user_id };
}

describe('conversations: two accounts, a group chat and a direct chat', () => {
  it('the list shows each chat with the last message and unread counts, which drop to 0 after read', async () => {
    const { client, a, b, group, aInGroup, bInGroup, directChat, aDirect, bDirect } = await twoAccounts();
    await postMessage(client, group, aInGroup, 'hi all', a.session);
    const g2 = await postMessage(client, group, bInGroup, 'hi Alice', b.session);
    const g3 = await postMessage(client, group, bInGroup, 'are you there?', b.session);
    const d1 = await postMessage(client, directChat, bDirect, 'psst', b.session);
    const d2 = await postMessage(client, directChat, aDirect, 'yes?', a.session);

    const listA = await listChats(client, a.session);
    assert.deepEqual(listA.map((c) => c.chat_id), [directChat, group], 'most recent activity first');
    const [directA, groupA] = listA;
    assert.equal(directA.direct, true);
    assert.equal(directA.chat_name, b.userName, 'a direct chat is named after the other account');
    assert.equal(directA.user_id, aDirect);
    assert.equal(directA.unread, 0, 'A wrote the last message of the direct chat');
    assert.deepEqual(
      { ...directA.last_message, created_at: undefined },
      { message_id: d2, user_id: aDirect, user_name: a.userName, text: 'yes?', created_at: undefined },
    );
    assert.ok(!Number.isNaN(Date.parse(directA.last_message?.created_at ?? '')));
    assert.equal(groupA.direct, false);
    assert.equal(groupA.user_id, aInGroup);
    assert.equal(groupA.unread, 2, "B's two messages after A's own");
    assert.equal(groupA.last_message?.message_id, g3);
    assert.equal(groupA.last_message?.user_name, 'Bob');
    assert.equal(groupA.last_message?.text, 'are you there?');

    const listB = await listChats(client, b.session);
    const directB = listB.find((c) => c.chat_id === directChat) as ChatItem;
    const groupB = listB.find((c) => c.chat_id === group) as ChatItem;
    assert.equal(directB.chat_name, a.userName);
    assert.equal(directB.user_id, bDirect);
    assert.equal(directB.unread, 1, "A's reply");
    assert.equal(groupB.unread, 0, 'B posted last in the group');

    assert.equal(await read(client, a.session, group, g3), 0);
    assert.equal(await read(client, b.session, directChat, d2), 0);
    assert.equal((await chatOf(client, a.session, group)).unread, 0);
    assert.equal((await chatOf(client, b.session, directChat)).unread, 0);
    // Stored in PostgreSQL as the message's per-chat position.
    assert.equal(await markerSeq(a, group), 3);
    assert.equal(await markerSeq(b, directChat), 2);
    assert.ok(g2 && d1);
  });

  it('lists a chat the account created but has not joined with user_id null, and not chats of others', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const other = await buildUser(client);
    const mine = await buildChat(client, u.session, 'created only');
    await buildChat(client, other.session, 'not mine');
    const list = await listChats(client, u.session);
    assert.deepEqual(list, [{ chat_id: mine, chat_name: 'created only', user_id: null, direct: false, last_message: null, unread: 0 }]);
  });

  it('orders by the last message, else by creation, newest first, and honours limit', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const first = await buildChat(client, u.session, 'first');
    const me = await joinChat(client, first, u.session);
    await sleep(5);
    const second = await buildChat(client, u.session, 'second');
    await sleep(5);
    const third = await buildChat(client, u.session, 'third');
    assert.deepEqual((await listChats(client, u.session)).map((c) => c.chat_name), ['third', 'second', 'first']);
    await sleep(5);
    await postMessage(client, first, me, 'bump', u.session);
    assert.deepEqual((await listChats(client, u.session)).map((c) => c.chat_id), [first, third, second]);
    assert.deepEqual((await listChats(client, u.session, 2)).map((c) => c.chat_id), [first, third]);
  });

  it('ranks a chat last written before last_seq_at existed by its last message once migration 007 has filled the time in', async () => {
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const old = await buildChat(client, u.session, 'old');
    const me = await joinChat(client, old, u.session);
    await sleep(5);
    const recent = await buildChat(client, u.session, 'recent');
    await sleep(5);
    const posted = await postMessage(client, old, me, 'after recent was made', u.session);
    assert.deepEqual((await listChats(client, u.session)).map((c) => c.chat_id), [old, recent]);
    // A chat last written before migration 005: neither the time nor (012) the last message on its row.
    await db.raw('UPDATE chats SET last_seq_at = NULL, last_message_head = NULL WHERE id = ?', [old]);
    assert.deepEqual((await listChats(client, u.session)).map((c) => c.chat_id), [recent, old], 'without the time, the creation ranks it');
    await chatListMigration.up(db);
    await lastMessageJson.fillLastMessages(db);
    const list = await listChats(client, u.session);
    assert.deepEqual(list.map((c) => c.chat_id), [old, recent]);
    assert.equal(list[0].last_message?.message_id, posted);
    const [row] = (await db.raw(
      'SELECT c.last_seq_at = m.created_at AS same FROM chats c JOIN messages m ON m.chat_id = c.id AND m.seq = c.last_seq WHERE c.id = ?',
      [old],
    )).rows as { same: boolean }[];
    assert.equal(row.same, true);
  });

  it('answers names and texts past ASCII, quotes and control characters exactly, the last message as the page has it', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const name = `Чат "q" \\ «ü» 🎉 ${uniq('x')}`;
    const chat = await buildChat(client, u.session, name);
    const me = await joinChat(client, chat, u.session, 'ник "n" \\');
    const text = 'line\nnext\ttab \u0001 \u001f "quoted" \\ back / slash — Ж 🎉 \u2028';
    await postMessage(client, chat, me, text, u.session);
    const res = await client.get('/v1/chats', u.session).expect(200).expect('Content-Type', /^application\/json/);
    // The body is compact JSON, as JSON.stringify would write it.
    assert.equal(res.text, JSON.stringify(res.body));
    const [item] = (res.body as { chats: ChatItem[] }).chats;
    assert.equal(item.chat_name, name);
    assert.equal(item.last_message?.text, text);
    const page = await getPage(client, chat, u.session, 10);
    assert.deepEqual(item.last_message, page.messages[0]);
    assert.match(item.last_message.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('migration 012 (the last message as wire JSON on the chat row), rolled back to 011 and applied again, leaves the list byte for byte the same', async () => {
    const { client, a, b, group, bInGroup, directChat, bDirect } = await twoAccounts();
    const { db } = harness().infra;
    await postMessage(client, group, bInGroup, 'line\nnext\t"quoted" \\ back — Ж 🎉 \u2028 \u0001', b.session);
    await postMessage(client, directChat, bDirect, 'just us', b.session);
    await buildChat(client, a.session, uniq('silent')); // no message: its last_message is null
    const list = async () => (await client.get('/v1/chats?limit=1000', a.session).expect(200)).text;
    const before = await list();
    assert.match(before, /"last_message":null/);
    await lastMessageJson.down(db);
    const { rows } = (await db.raw('SELECT count(*)::int AS n FROM chats WHERE last_text IS NOT NULL AND id = ?::uuid', [group])) as { rows: { n: number }[] };
    assert.equal(rows[0].n, 1, "011's columns are filled again from messages");
    await lastMessageJson.up(db);
    assert.equal(await list(), before);
  });

  it('answers 400 bad-parameters for a bad limit', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    for (const bad of ['0', '1001', 'x', '1.5', '-1']) {
      await client.get(`/v1/chats?limit=${bad}`, u.session).expect(400).expect(badParameters);
    }
  });

  it("counts only others' messages: posting moves the poster's marker to its message", async () => {
    const { client, a, b, group, aInGroup, bInGroup } = await twoAccounts();
    await postMessage(client, group, bInGroup, 'one', b.session);
    await postMessage(client, group, bInGroup, 'two', b.session);
    assert.equal((await chatOf(client, a.session, group)).unread, 2);
    await postMessage(client, group, aInGroup, 'my answer', a.session);
    assert.equal((await chatOf(client, a.session, group)).unread, 0, 'answering reads what came before');
    assert.equal(await markerSeq(a, group), 3);
    await postMessage(client, group, bInGroup, 'three', b.session);
    assert.equal((await chatOf(client, a.session, group)).unread, 1);
    assert.equal((await chatOf(client, b.session, group)).unread, 0);
  });
});

describe('POST /v1/chats/{chat_id}/read', () => {
  it('never moves the marker backwards: an older message leaves it, and answers the current count', async () => {
    const { client, a, b, group, bInGroup } = await twoAccounts();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await postMessage(client, group, bInGroup, `m${i}`, b.session));
    assert.equal(await read(client, a.session, group, ids[3]), 1);
    assert.equal(await read(client, a.session, group, ids[0]), 1, 'still at the fourth message');
    assert.equal(await markerSeq(a, group), 4);
    assert.equal(await read(client, a.session, group, ids[4]), 0);
  });

  it('concurrent reads of different messages leave the marker at the furthest', async () => {
    const { client, a, b, group, bInGroup } = await twoAccounts();
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push(await postMessage(client, group, bInGroup, `m${i}`, b.session));
    const order = [7, 2, 11, 0, 5, 9, 1, 10, 3, 6, 4, 8];
    const answers = await Promise.all(order.map((i) => read(client, a.session, group, ids[i])));
    assert.ok(answers.every((n) => n >= 0 && n <= 12));
    assert.equal(await markerSeq(a, group), 12);
    assert.equal((await chatOf(client, a.session, group)).unread, 0);
    assert.equal(await read(client, a.session, group, ids[0]), 0);
  });

  it('the creator who has not joined may read; the marker is stored for the account', async () => {
    const { client } = harness().app;
    const owner = await buildUser(client);
    const poster = await buildUser(client);
    const chat = await buildChat(client, owner.session);
    const p = await joinChat(client, chat, poster.session);
    const m1 = await postMessage(client, chat, p, 'one', poster.session);
    await postMessage(client, chat, p, 'two', poster.session);
    assert.equal((await chatOf(client, owner.session, chat)).unread, 2);
    assert.equal(await read(client, owner.session, chat, m1), 1);
  });

  it('answers the errors of the contract and stores nothing on any of them', async () => {
    const { client, a, b, group, bInGroup, directChat, bDirect } = await twoAccounts();
    const m1 = await postMessage(client, group, bInGroup, 'one', b.session);
    const elsewhere = await postMessage(client, directChat, bDirect, 'in the direct chat', b.session);
    const stranger = await buildUser(client);
    const cases: [string, string, unknown, number, string][] = [
      ['unknown chat', 'a'.repeat(32), { message_id: m1 }, 404, 'chat-not-found'],
      ['malformed chat', 'nope', { message_id: m1 }, 404, 'chat-not-found'],
      ['message of another chat', group, { message_id: elsewhere }, 400, 'bad-cursor'],
      ['unknown message', group, { message_id: 'b'.repeat(32) }, 400, 'bad-cursor'],
      ['malformed message id', group, { message_id: 'xyz' }, 400, 'bad-cursor'],
      ['missing message id', group, {}, 400, 'bad-parameters'],
      ['object message id', group, { message_id: { a: 1 } }, 400, 'bad-parameters'],
    ];
    for (const [what, chat, body, status, code] of cases) {
      const res = await client.post(`/v1/chats/${chat}/read`, body as object, a.session);
      assert.equal(res.status, status, what);
      assert.equal((res.body as { message: string }).message, code, what);
      assert.deepEqual(Object.keys(res.body as object).filter((k) => k !== 'message' && k !== 'detail'), [], what);
    }
    await client.post(`/v1/chats/${group}/read`, { message_id: m1 }, stranger.session).expect(404, { message: 'chat-not-found' });
    assert.equal(await markerSeq(a, group), undefined);
    assert.equal(await markerSeq(stranger, group), undefined);
    const [{ count }] = await harness().infra.db('read_markers').where('account_id', await accountOf(stranger)).count<{ count: string }[]>('* as count');
    assert.equal(Number(count), 0);
  });
});

describe('POST /v1/direct', () => {
  it('makes one chat per pair: again from either side answers the same chat and the caller\'s user_id', async () => {
    const { client } = harness().app;
    const a = await buildUser(client);
    const b = await buildUser(client);
    const first = await direct(client, a.session, b.userName);
    assert.match(first.chat_id, /^[0-9a-f]{32}$/);
    const again = await direct(client, a.session, b.userName);
    assert.deepEqual(again, first);
    const fromB = await direct(client, b.session, a.userName);
    assert.equal(fromB.chat_id, first.chat_id);
    assert.notEqual(fromB.user_id, first.user_id);
    const list = await members(client, a.session, first.chat_id);
    assert.deepEqual(list.map((m) => [m.user_id, m.user_name]), [[first.user_id, a.userName], [fromB.user_id, b.userName]]);
    // Both may post and read with their identities.
    await postMessage(client, first.chat_id, fromB.user_id, 'hello', b.session);
    const page = await getPage(client, first.chat_id, a.session, 10);
    assert.deepEqual(page.messages.map((m) => [m.user_name, m.text]), [[b.userName, 'hello']]);
    // Joining it again as a member returns the member's own id.
    assert.equal(await joinChat(client, first.chat_id, b.session, 'other name'), fromB.user_id);
  });

  it('concurrent creation from both sides yields exactly one chat', async () => {
    const { client } = harness().app;
    const a = await buildUser(client);
    const b = await buildUser(client);
    const calls = Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? direct(client, a.session, b.userName) : direct(client, b.session, a.userName)));
    const answers = await Promise.all(calls);
    assert.equal(new Set(answers.map((r) => r.chat_id)).size, 1);
    assert.equal(new Set(answers.map((r) => r.user_id)).size, 2, 'one identity per side');
    const [ida, idb] = [await accountOf(a), await accountOf(b)];
    const chats = await harness().infra.db('chats').whereIn('direct_a', [ida, idb]).whereIn('direct_b', [ida, idb]);
    assert.equal(chats.length, 1);
    const rows = await harness().infra.db('chat_members').where('chat_id', chats[0].id);
    assert.equal(rows.length, 2);
  });

  it('the database itself refuses a second direct chat for the same pair, in either order', async () => {
    const { client } = harness().app;
    const { db } = harness().infra;
    const a = await buildUser(client);
    const b = await buildUser(client);
    await direct(client, a.session, b.userName);
    const [ida, idb] = [await accountOf(a), await accountOf(b)];
    const [lo, hi] = ida < idb ? [ida, idb] : [idb, ida];
    await assert.rejects(db('chats').insert({ chat_name: 'dup', owner_id: ida, direct_a: lo, direct_b: hi }), (err: { code?: string }) => err.code === '23505');
    await assert.rejects(db('chats').insert({ chat_name: 'dup', owner_id: ida, direct_a: hi, direct_b: lo }), (err: { code?: string }) => err.code === '23514');
  });

  it('is closed to a third account: reading, joining, listing members and marking read answer 404', async () => {
    const { client, b, directChat, bDirect } = await twoAccounts();
    const m = await postMessage(client, directChat, bDirect, 'private', b.session);
    const c = await buildUser(client);
    await client.get(`/v1/chats/${directChat}/messages?limit=10`, c.session).expect(404, { message: 'chat-not-found' });
    await client.post(`/v1/chats/${directChat}/users`, { user_name: 'intruder' }, c.session).expect(404, { message: 'chat-not-found' });
    await client.get(`/v1/chats/${directChat}/users`, c.session).expect(404, { message: 'chat-not-found' });
    await client.post(`/v1/chats/${directChat}/read`, { message_id: m }, c.session).expect(404, { message: 'chat-not-found' });
    await client.post(`/v1/chats/${directChat}/messages?user_id=${bDirect}`, { message: 'x' }, c.session).expect(404);
    assert.equal((await harness().infra.db('chat_members').where('chat_id', directChat)).length, 2);
    assert.deepEqual(await listChats(client, c.session), []);
  });

  it('answers 400 bad-parameters for yourself and 404 user-not-found for an unknown name, creating nothing', async () => {
    const { client } = harness().app;
    const a = await buildUser(client);
    await client.post('/v1/direct', { user_name: a.userName }, a.session).expect(400).expect(badParameters);
    await client.post('/v1/direct', { user_name: uniq('nobody') }, a.session).expect(404, { message: 'user-not-found' });
    await client.post('/v1/direct', { user_name: '' }, a.session).expect(400).expect(badParameters);
    await client.post('/v1/direct', {}, a.session).expect(400).expect(badParameters);
    const id = await accountOf(a);
    const chats = await harness().infra.db('chats').where('owner_id', id);
    assert.equal(chats.length, 0);
    assert.deepEqual(await listChats(client, a.session), []);
  });
});

describe('GET /v1/chats/{chat_id}/users', () => {
  it('lists members in join order with online from presence', async () => {
    const { client } = harness().app;
    const [a, b, c] = [await buildUser(client), await buildUser(client), await buildUser(client)];
    const chat = await buildChat(client, a.session);
    const ub = await joinChat(client, chat, b.session, 'Bee');
    const ua = await joinChat(client, chat, a.session, 'Ay');
    const uc = await joinChat(client, chat, c.session, 'Cee');
    const { presence } = harness().infra;
    await presence.heartbeat('test-instance', [toWireId(await accountOf(b))]);
    try {
      assert.deepEqual(await members(client, a.session, chat), [
        { user_id: ub, user_name: 'Bee', online: true },
        { user_id: ua, user_name: 'Ay', online: false },
        { user_id: uc, user_name: 'Cee', online: false },
      ]);
    } finally {
      await presence.leave('test-instance', toWireId(await accountOf(b)));
    }
    assert.equal((await members(client, a.session, chat))[0].online, false, 'offline once the connection left');
  });

  it('lets the creator list an empty chat, and answers 404 chat-not-found for unknown, malformed and foreign chats', async () => {
    const { client } = harness().app;
    const a = await buildUser(client);
    const stranger = await buildUser(client);
    const chat = await buildChat(client, a.session);
    assert.deepEqual(await members(client, a.session, chat), []);
    for (const bad of ['a'.repeat(32), 'nope', "1' OR '1'='1"]) {
      await client.get(`/v1/chats/${encodeURIComponent(bad)}/users`, a.session).expect(404, { message: 'chat-not-found' });
    }
    await client.get(`/v1/chats/${chat}/users`, stranger.session).expect(404, { message: 'chat-not-found' });
  });
  it('pages members in join order with limit and from (a 50,000-member list was one 4.6 MB answer, no way to take less), and keeps the whole list without them', async () => {
    const { client } = harness().app;
    const [a, b, c, stranger] = [await buildUser(client), await buildUser(client), await buildUser(client), await buildUser(client)];
    const chat = await buildChat(client, a.session);
    const ids = [await joinChat(client, chat, a.session, 'Ay'), await joinChat(client, chat, b.session, 'Bee'), await joinChat(client, chat, c.session, 'Cee')];
    const page = async (q: string, session = a.session) => (await client.get(`/v1/chats/${chat}/users?${q}`, session).expect(200)).body as { users: Member[]; next: { iterator: string } };
    const first = await page('limit=2');
    assert.deepEqual(first.users.map((u) => u.user_id), ids.slice(0, 2));
    assert.equal(first.next.iterator, ids[1]);
    const second = await page(`limit=2&from=${first.next.iterator}`);
    assert.deepEqual(second.users.map((u) => u.user_name), ['Cee']);
    assert.equal(second.next.iterator, ids[2]);
    // An empty page repeats the cursor; a later join shows up behind it.
    assert.deepEqual(await page(`limit=2&from=${ids[2]}`), { users: [], next: { iterator: ids[2] } });
    const d = await buildUser(client);
    const ud = await joinChat(client, chat, d.session, 'Dee');
    assert.deepEqual((await page(`limit=5&from=${ids[2]}`)).users.map((u) => u.user_id), [ud]);
    // The dashed spelling and the all-zero start; from alone pages to the end.
    assert.deepEqual((await page(`from=${ids[0].replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-')}`)).users.map((u) => u.user_id), [ids[1], ids[2], ud]);
    assert.deepEqual((await page(`limit=1000&from=${'0'.repeat(32)}`)).users.length, 4);
    // Without either, the SPEC's answer: every member, no next.
    const all = (await client.get(`/v1/chats/${chat}/users`, a.session).expect(200)).body as Record<string, unknown>;
    assert.deepEqual(Object.keys(all), ['users']);
    // Refusals: the documented codes, and nothing about a chat one may not read.
    for (const q of ['limit=0', 'limit=1001', 'limit=x', 'limit=1e2']) await client.get(`/v1/chats/${chat}/users?${q}`, a.session).expect(400).expect(badParameters);
    const other = await buildChat(client, a.session);
    const foreignMember = await joinChat(client, other, b.session, 'elsewhere');
    for (const from of [foreignMember, 'nope', 'f'.repeat(32)]) await client.get(`/v1/chats/${chat}/users?limit=2&from=${from}`, a.session).expect(400, { message: 'bad-cursor' });
    await client.get(`/v1/chats/${chat}/users?limit=2&from=${ids[1]}`, stranger.session).expect(404, { message: 'chat-not-found' });
  });
});

describe('GET /v1/users (people search)', () => {
  it('matches by prefix case-insensitively, in name order, at most limit', async () => {
    const { client } = harness().app;
    const tag = uniq('Pp').toLowerCase();
    const names = [`${tag}_Carol`, `${tag}_alice`, `${tag}_Bob`, `${tag}_dave`];
    let me: TestUser | undefined;
    for (const n of names) me = await buildUser(client, { userName: n });
    const session = (me as TestUser).session;
    assert.deepEqual(await searchUsers(client, session, `prefix=${tag.toUpperCase()}`), [`${tag}_alice`, `${tag}_Bob`, `${tag}_Carol`, `${tag}_dave`]);
    assert.deepEqual(await searchUsers(client, session, `prefix=${tag}_B`), [`${tag}_Bob`]);
    assert.deepEqual(await searchUsers(client, session, `prefix=${tag}&limit=2`), [`${tag}_alice`, `${tag}_Bob`]);
    assert.deepEqual(await searchUsers(client, session, `prefix=${tag}_zzz`), []);
  });

  it('defaults to 20 names and never lists everyone: prefixes under 3 characters and limits over 50 are refused', async () => {
    const { client } = harness().app;
    const tag = uniq('many');
    let session = '';
    for (let i = 0; i < 22; i++) session = (await buildUser(client, { userName: `${tag}${String(i).padStart(2, '0')}` })).session;
    assert.equal((await searchUsers(client, session, `prefix=${tag}`)).length, 20);
    assert.equal((await searchUsers(client, session, `prefix=${tag}&limit=50`)).length, 22);
    for (const q of ['prefix=ab', 'prefix=', '', 'prefix=abc&limit=51', 'prefix=abc&limit=0', `prefix=${'x'.repeat(256)}`]) {
      await client.get(`/v1/users?${q}`, session).expect(400).expect(badParameters);
    }
  });

  // Until 2026-12-07 the prefix was only lowercased, while login and name
  // uniqueness match by nameKey: a full-width or decomposed prefix found nothing.
  it('matches the prefix the way names are matched at login: full-width and differently composed prefixes find the name', async () => {
    const { client } = harness().app;
    const tag = uniq('uni').toLowerCase();
    const fullWidth = (t: string): string => t.replace(/[!-~]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 0xfee0));
    const u = await buildUser(client, { userName: `${tag}_\u00c5sa` });
    await buildUser(client, { userName: `${tag}_bo` });
    const q = (prefix: string) => searchUsers(client, u.session, `prefix=${encodeURIComponent(prefix)}`);
    assert.deepEqual(await q(fullWidth(tag.toUpperCase())), [`${tag}_bo`, `${tag}_\u00c5sa`]);
    assert.deepEqual(await q(`${tag}_A\u030a`), [`${tag}_\u00c5sa`]);
    assert.deepEqual(await q(fullWidth(`${tag}_`) + 'a\u030aS'), [`${tag}_\u00c5sa`]);
    assert.deepEqual(await q(`${tag}_\u00e5sa`), [`${tag}_\u00c5sa`]);
  });

  it('treats % and _ in the prefix as themselves', async () => {
    const { client } = harness().app;
    const tag = uniq('esc');
    const u = await buildUser(client, { userName: `${tag}%_x` });
    await buildUser(client, { userName: `${tag}ab_x` });
    await buildUser(client, { userName: `${tag}!!x` });
    assert.deepEqual(await searchUsers(client, u.session, `prefix=${encodeURIComponent(`${tag}%`)}`), [`${tag}%_x`]);
    assert.deepEqual(await searchUsers(client, u.session, `prefix=${encodeURIComponent(`${tag}__`)}`), []);
    assert.deepEqual(await searchUsers(client, u.session, `prefix=${encodeURIComponent(`${tag}!`)}`), [`${tag}!!x`]);
    assert.equal(likePrefix('a%b_c!'), 'a!%b!_c!!');
  });
});

describe('conversation events', () => {
  it('member.joined is published for a new membership only, and for both members of a new direct chat', async () => {
    const joined = collect('member.joined');
    try {
      const { client } = harness().app;
      const a = await buildUser(client);
      const b = await buildUser(client);
      const chat = await buildChat(client, a.session);
      const ua = await joinChat(client, chat, a.session, 'Ann');
      await joinChat(client, chat, a.session, 'Ann again');
      const accountA = toWireId(await accountOf(a));
      const accountB = toWireId(await accountOf(b));
      assert.deepEqual(await joined.until((e) => e.chatId === chat, 'for the join'), { chatId: chat, userId: ua, userName: 'Ann', accountId: accountA });
      const d = await direct(client, a.session, b.userName);
      const fromB = await direct(client, b.session, a.userName);
      await joined.until((e) => e.chatId === d.chat_id && e.accountId === accountB, 'for B in the direct chat');
      await sleep(100);
      assert.equal(joined.seen.filter((e) => e.chatId === chat).length, 1, 'a repeat join publishes nothing');
      const forDirect = joined.seen.filter((e) => e.chatId === d.chat_id);
      assert.deepEqual(
        forDirect.sort((x, y) => (x.userName === a.userName ? -1 : y.userName === a.userName ? 1 : 0)),
        [
          { chatId: d.chat_id, userId: d.user_id, userName: a.userName, accountId: accountA },
          { chatId: d.chat_id, userId: fromB.user_id, userName: b.userName, accountId: accountB },
        ],
      );
    } finally {
      joined.stop();
    }
  });

  it('read.moved is published when the marker moves (a read, a post), not when it stays', async () => {
    const moved = collect('read.moved');
    try {
      const { client, a, b, group, aInGroup, bInGroup } = await twoAccounts();
      const accountA = toWireId(await accountOf(a));
      const accountB = toWireId(await accountOf(b));
      const m1 = await postMessage(client, group, bInGroup, 'one', b.session);
      const m2 = await postMessage(client, group, bInGroup, 'two', b.session);
      assert.deepEqual(await moved.until((e) => e.accountId === accountB && e.messageId === m2, 'for B posting'), {
        accountId: accountB, chatId: group, messageId: m2, unread: 0, seq: 2,
      });
      await read(client, a.session, group, m1);
      assert.deepEqual(await moved.until((e) => e.accountId === accountA && e.messageId === m1, 'for A reading'), {
        accountId: accountA, chatId: group, messageId: m1, unread: 1, seq: 1,
      });
      await read(client, a.session, group, m1);
      const m3 = await postMessage(client, group, aInGroup, 'mine', a.session);
      await moved.until((e) => e.accountId === accountA && e.messageId === m3, 'for A posting');
      await sleep(100);
      assert.equal(moved.seen.filter((e) => e.accountId === accountA && e.messageId === m1).length, 1, 'reading the same message again publishes nothing');
    } finally {
      moved.stop();
    }
  });
});

describe('conversation apps and settings', () => {
  it('APPS without conversations removes exactly its operations (404 not-found)', async () => {
    const app = await startApp(harness().infra, { APPS: 'auth,chats,messages' });
    try {
      const { client } = app;
      const a = await buildUser(client);
      const b = await buildUser(client);
      const chat = await buildChat(client, a.session);
      const me = await joinChat(client, chat, a.session);
      const m = await postMessage(client, chat, me, 'x', a.session);
      await client.get('/v1/chats', a.session).expect(404, { message: 'not-found' });
      await client.post(`/v1/chats/${chat}/read`, { message_id: m }, a.session).expect(404, { message: 'not-found' });
      await client.post('/v1/direct', { user_name: b.userName }, a.session).expect(404, { message: 'not-found' });
      await client.get('/v1/users?prefix=abc', a.session).expect(404, { message: 'not-found' });
      assert.equal((await members(client, a.session, chat)).length, 1, 'the members list is the chats app');
    } finally {
      await app.close();
    }
  });

  it('with AUTH_DISABLED=1 the account operations are off and the members list works', async () => {
    const app = await startApp(harness().infra, { AUTH_DISABLED: '1' });
    try {
      const { client } = app;
      const chat = await buildChat(client);
      const bob = await joinChat(client, chat, undefined, 'bob');
      assert.deepEqual(await members(client, undefined, chat), [{ user_id: bob, user_name: 'bob', online: false }]);
      await client.get('/v1/chats').expect(404, { message: 'not-found' });
      await client.get('/v1/users?prefix=abc').expect(404, { message: 'not-found' });
    } finally {
      await app.close();
    }
  });
});

function planOf(rows: Record<string, string>[]): string {
  return rows.map((r) => Object.values(r)[0]).join('\n');
}

describe('conversation queries use indexes', () => {
  it('the chat list is one index-backed statement over filled tables', async function () {
    this.timeout(120_000);
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const other = await buildUser(client);
    const [me, them] = [await accountOf(u), await accountOf(other)];
    const tag = uniq('fill');
    // 20,000 chats of another account, every 5th with 5 messages; the account owns every 1,000th and joins every 500th
    // (an account is in a small share of all chats, which is what makes index probes the cheaper plan).
    await db.raw(
      `INSERT INTO chats (chat_name, owner_id, last_seq)
       SELECT ? || g, CASE WHEN g % 1000 = 0 THEN ?::uuid ELSE ?::uuid END, CASE WHEN g % 5 = 0 THEN 5 ELSE 0 END
         FROM generate_series(1, 20000) AS g`,
      [tag, me, them],
    );
    await db.raw(
      `INSERT INTO chat_members (chat_id, user_name, account_id)
       SELECT id, 'them', ?::uuid FROM chats WHERE chat_name LIKE ? || '%'`,
      [them, tag],
    );
    await db.raw(
      `INSERT INTO chat_members (chat_id, user_name, account_id)
       SELECT id, 'me', ?::uuid FROM chats WHERE chat_name LIKE ? || '%' AND substr(chat_name, length(?) + 1)::int % 500 = 0`,
      [me, tag, tag],
    );
    await db.raw(
      `INSERT INTO messages (chat_id, member_id, seq, text)
       SELECT m.chat_id, m.id, s, 'filler ' || s
         FROM chat_members m JOIN chats c ON c.id = m.chat_id AND c.last_seq = 5, generate_series(1, 5) AS s
        WHERE m.account_id = ?::uuid AND m.user_name = 'them'`,
      [them],
    );
    // What the write paths keep on the chat row, filled as the migrations fill it for messages stored by hand.
    await chatListMigration.up(db);
    await lastMessageJson.fillLastMessages(db);
    await db.raw('ANALYZE chats');
    await db.raw('ANALYZE chat_members');
    await db.raw('ANALYZE messages');
    await db.raw('ANALYZE read_markers');
    const list = await listChats(client, u.session, 1000);
    assert.equal(list.length, 40, 'owned (20) and joined (40) chats overlap in 20');
    assert.ok(list.every((c) => c.last_message?.text === 'filler 5' && c.last_message.user_name === 'them' && c.unread === 5));
    assert.ok(list.every((c) => typeof c.last_message?.created_at === 'string'));
    const res = (await db.raw(`EXPLAIN ${CHATS_OF_ACCOUNT_SQL}`, chatsOfAccountParams(me, 1000))) as { rows: Record<string, string>[] };
    const plan = planOf(res.rows);
    assert.match(plan, /chats_owner_idx/, plan);
    assert.match(plan, /chat_members_account_(idx|uq)/, plan);
    // The last message is read from the chat row, not probed.
    assert.doesNotMatch(plan, /on messages\b/, plan);
    assert.doesNotMatch(plan, /Seq Scan on (chat_members|chats)\b/, plan);
  });

  it('the people search reads a range of its index, not the whole table', async function () {
    this.timeout(60_000);
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const tag = uniq('crowd');
    await db.raw(
      `INSERT INTO users (user_name, password_hash) SELECT ? || g, 'x' FROM generate_series(1, 20000) AS g`,
      [tag],
    );
    await db.raw('ANALYZE users');
    const res = (await db.raw(`EXPLAIN ${NAMES_BY_PREFIX_SQL}`, [likePrefix(`${tag}12`), 20])) as { rows: Record<string, string>[] };
    const plan = planOf(res.rows);
    assert.match(plan, /users_name_prefix_idx/, plan);
    assert.doesNotMatch(plan, /Seq Scan on users/, plan);
    const names = await searchUsers(client, u.session, `prefix=${tag}12&limit=50`);
    assert.equal(names.length, 50);
    assert.ok(names.every((n) => n.startsWith(`${tag}12`)));
    assert.deepEqual(names, [...names].sort());
  });
});
