import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { sessionOf } from '../messenger/apps/auth';
import { deleteExpiredKeys, keyedMessage, releaseKey, reserveKey } from '../messenger/db/idempotency-keys';
import { insertMessage, memberOfChat, messagesAfter, pageOfChat, resumeReplays, storedMessages } from '../messenger/db/messages';
import { advanceMarkers } from '../messenger/db/read_markers';
import { searchExact } from '../messenger/db/search';
import { insertSession, markFirstUse, revokeSession } from '../messenger/db/sessions';
import { deleteEndedLogins, insertChain } from '../messenger/db/session-chains';
import { insertRefreshToken } from '../messenger/db/refresh-tokens';
import { AppError } from '../messenger/errors';
import { parseId, uuidv7 } from '../messenger/ids';
import type { ApiContext } from '../messenger/types';
import { harness } from './helpers/harness';
import { buildChat, buildUser, joinChat } from './helpers/factories';

const uuid = (wire: string) => parseId(wire) as string;

async function accountOf(userName: string): Promise<string> {
  return ((await harness().infra.db('users').where({ user_name: userName }).first('id')) as { id: string }).id;
}

/** A new account with one chat in which it posted `messages` through the API; returns the account id. */
async function accountWithMessages(messages: string[]): Promise<string> {
  const { client } = harness().app;
  const u = await buildUser(client);
  const chatId = await buildChat(client, u.session);
  const memberId = await joinChat(client, chatId, u.session);
  for (const message of messages) {
    await client.post(`/v1/chats/${chatId}/messages?user_id=${memberId}`, { message }, u.session).expect(201);
  }
  return accountOf(u.userName);
}

describe('db edges: the answers for what is missing or empty', () => {
  it('insertMessage stores nothing and says which is missing: the chat, or a member of it owned by the account', async () => {
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const chatId = uuid(await buildChat(client, u.session));
    const memberId = uuid(await joinChat(client, chatId, u.session));
    const otherChat = uuid(await buildChat(client, u.session));
    const stranger = await accountOf((await buildUser(client)).userName);
    const count = async () => Number((await db('messages').whereIn('chat_id', [chatId, otherChat]).count<{ n: string }[]>('* as n'))[0].n);
    assert.deepEqual(await insertMessage(db, randomUUID(), memberId, null, 'x'), { missing: 'chat' });
    assert.deepEqual(await insertMessage(db, otherChat, memberId, null, 'x'), { missing: 'member' });
    // The stranger may not read the chat: it is missing to them, as if it did not exist.
    assert.deepEqual(await insertMessage(db, chatId, memberId, stranger, 'x'), { missing: 'chat' });
    assert.equal(await count(), 0);
    const stored = await insertMessage(db, chatId, memberId, await accountOf(u.userName), 'x');
    assert.ok('seq' in stored && stored.seq === 1, JSON.stringify(stored));
  });

  it('messagesAfter on a chat that does not exist: no rows, and the position asked for', async () => {
    assert.deepEqual(await messagesAfter(harness().infra.db, randomUUID(), 5, 10), { rows: [], lastSeq: 5 });
  });

  it('advanceMarkers with no moves moves nothing', async () => {
    assert.deepEqual(await advanceMarkers(harness().infra.db, []), []);
  });

  it('searchExact with a phrase without words finds nothing (there is no full-text query for it)', async () => {
    const account = await accountWithMessages(['wave 👋🏽']);
    assert.deepEqual(await searchExact(harness().infra.db, account, '👋🏽', 10, 5000), []);
    assert.equal((await searchExact(harness().infra.db, account, 'wave', 10, 5000)).length, 1);
  });

  it('uuidv7: ids across several refills of its random pool are distinct, version 7 with the RFC 9562 variant, and ordered by their time', () => {
    const ids = Array.from({ length: 2000 }, (_, i) => uuidv7(1_700_000_000_000 + i));
    assert.equal(new Set(ids).size, ids.length);
    for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual([...ids].sort(), ids);
    // The random part differs from one id to the next even within one millisecond.
    const same = Array.from({ length: 600 }, () => uuidv7(1_700_000_000_000).slice(15));
    assert.equal(new Set(same).size, same.length);
  });

  it('an idempotency key: reserved once, kept against other ids, released only by its own message, taken over once expired', async () => {
    const { db } = harness().infra;
    const owner = randomUUID();
    const first = uuidv7();
    const second = uuidv7();
    assert.equal(await reserveKey(db, owner, 'k', first), first);
    assert.equal(await reserveKey(db, owner, 'k', second), first);
    assert.equal(await keyedMessage(db, owner, 'k'), first);
    // Another owner's key of the same name is its own.
    assert.equal(await reserveKey(db, randomUUID(), 'k', second), second);
    await releaseKey(db, owner, 'k', second);
    assert.equal(await keyedMessage(db, owner, 'k'), first);
    await releaseKey(db, owner, 'k', first);
    assert.equal(await keyedMessage(db, owner, 'k'), undefined);
    assert.equal(await reserveKey(db, owner, 'k', second), second);
    // Expired (older than 24 hours): not answered, taken over by the next reservation, deleted by the sweep.
    await db('idempotency_keys').where({ owner_id: owner, key: 'k' }).update({ created_at: new Date(Date.now() - 25 * 3600_000) });
    assert.equal(await keyedMessage(db, owner, 'k'), undefined);
    const third = uuidv7();
    assert.equal(await reserveKey(db, owner, 'k', third), third);
    await db('idempotency_keys').where({ owner_id: owner, key: 'k' }).update({ created_at: new Date(Date.now() - 25 * 3600_000) });
    const other = randomUUID();
    await reserveKey(db, other, 'fresh', uuidv7());
    assert.ok((await deleteExpiredKeys(db)) >= 1);
    assert.equal(await db('idempotency_keys').where({ owner_id: owner }).first(), undefined);
    assert.notEqual(await db('idempotency_keys').where({ owner_id: other }).first(), undefined);
  });

  it('deleteEndedLogins: a login expired over 7 days ago goes with its sessions and refresh tokens; newer ones and chainless live sessions stay', async () => {
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const account = await accountOf(u.userName);
    const day = 24 * 3600_000;
    const login = async (expiresAt: Date): Promise<{ chain: string; session: Buffer; refresh: Buffer }> => {
      const chain = await insertChain(db, account, expiresAt);
      const session = randomBytes(32);
      const refresh = randomBytes(32);
      await insertSession(db, session, account, expiresAt, chain);
      await insertRefreshToken(db, refresh, chain, session);
      return { chain, session, refresh };
    };
    const old = await login(new Date(Date.now() - 8 * day));
    const recent = await login(new Date(Date.now() - 6 * day));
    const oldChainless = randomBytes(32);
    await insertSession(db, oldChainless, account, new Date(Date.now() - 8 * day));
    const liveChainless = randomBytes(32);
    await insertSession(db, liveChainless, account, new Date(Date.now() + day));

    assert.ok((await deleteEndedLogins(db)) >= 2);
    const has = async (table: string, where: Record<string, unknown>) => (await db(table).where(where).first()) !== undefined;
    assert.deepEqual(
      [await has('session_chains', { id: old.chain }), await has('sessions', { token_hash: old.session }), await has('refresh_tokens', { token_hash: old.refresh })],
      [false, false, false],
    );
    assert.deepEqual(
      [await has('session_chains', { id: recent.chain }), await has('sessions', { token_hash: recent.session }), await has('refresh_tokens', { token_hash: recent.refresh })],
      [true, true, true],
    );
    assert.equal(await has('sessions', { token_hash: oldChainless }), false);
    assert.equal(await has('sessions', { token_hash: liveChainless }), true);
    // The account's own login (buildUser's) is untouched and still works.
    await client.get('/v1/auth/me', u.session).expect(200);
  });

  it('reserveKey: a key that keeps vanishing between its two statements is tried three times, then the new id is used', async () => {
    // A store where the key is always live for the INSERT and already gone for the SELECT after it
    // (released after a failed publish or expired, each time): the race the retry loop is for.
    const statements: string[] = [];
    const fake = {
      raw(sql: string) {
        statements.push(sql.trim().split(/\s+/)[0]);
        const res = Promise.resolve({ rows: [] });
        return Object.assign(res, { options: () => res });
      },
    } as unknown as Parameters<typeof reserveKey>[0];
    const id = uuidv7();
    assert.equal(await reserveKey(fake, randomUUID(), 'k', id), id);
    assert.deepEqual(statements, ['INSERT', 'SELECT', 'INSERT', 'SELECT', 'INSERT', 'SELECT']);
  });

  it('storedMessages answers exactly the ids that are stored, each with its seq, time and author, and nothing for no ids', async () => {
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const chatId = uuid(await buildChat(client, u.session));
    const memberId = uuid(await joinChat(client, chatId, u.session));
    const a = await insertMessage(db, chatId, memberId, null, 'a');
    const b = await insertMessage(db, chatId, memberId, null, 'b');
    assert.ok('id' in a && 'id' in b);
    const unknown = uuidv7();
    const found = await storedMessages(db, [a.id, unknown, b.id]);
    assert.deepEqual([...found.keys()].sort(), [a.id, b.id].sort());
    for (const m of [a, b]) {
      const row = found.get(m.id);
      assert.deepEqual([row?.seq, row?.created_at.getTime(), row?.user_name], [m.seq, m.created_at.getTime(), m.user_name]);
    }
    assert.deepEqual([...(await storedMessages(db, [unknown])).keys()], []);
    assert.deepEqual([...(await storedMessages(db, [])).keys()], []);
  });

  it('memberOfChat, pageOfChat and resumeReplays name what is missing: the chat (unknown or not the account\'s), the member, or the cursor', async () => {
    const { client } = harness().app;
    const { db } = harness().infra;
    const u = await buildUser(client);
    const account = await accountOf(u.userName);
    const stranger = await accountOf((await buildUser(client)).userName);
    const chatId = uuid(await buildChat(client, u.session));
    const memberId = uuid(await joinChat(client, chatId, u.session, 'nick_of_u'));
    const otherChat = uuid(await buildChat(client, u.session));
    const stored = await insertMessage(db, chatId, memberId, account, 'one');
    assert.ok('id' in stored);
    const elsewhere = await insertMessage(db, otherChat, uuid(await joinChat(client, otherChat, u.session)), account, 'two');
    assert.ok('id' in elsewhere);

    assert.deepEqual(await memberOfChat(db, chatId, memberId, account), { userName: 'nick_of_u' });
    assert.deepEqual(await memberOfChat(db, chatId, memberId, stranger), { missing: 'chat' });
    assert.deepEqual(await memberOfChat(db, otherChat, memberId, account), { missing: 'member' });
    assert.deepEqual(await memberOfChat(db, randomUUID(), memberId, account), { missing: 'chat' });

    assert.deepEqual(await pageOfChat(db, chatId, account, elsewhere.id, 10), { missing: 'cursor' });
    assert.deepEqual(await pageOfChat(db, chatId, stranger, null, 10), { missing: 'chat' });
    assert.deepEqual(await pageOfChat(db, randomUUID(), account, null, 10), { missing: 'chat' });
    assert.deepEqual(await pageOfChat(db, chatId, account, stored.id, 10), { messages: '[]', lastId: null });
    const first = await pageOfChat(db, chatId, account, null, 10);
    assert.ok('messages' in first);
    assert.equal(first.lastId, stored.id);
    assert.deepEqual(JSON.parse(first.messages), [
      { message_id: stored.id.replace(/-/g, ''), user_id: memberId.replace(/-/g, ''), user_name: 'nick_of_u', text: 'one', created_at: stored.created_at.toISOString() },
    ]);

    // Every chat of a resume in one statement, answered in the order asked.
    const texts = (r: Awaited<ReturnType<typeof resumeReplays>>[number]) => ('missing' in r ? r : { afterSeq: r.afterSeq, lastSeq: r.lastSeq, texts: r.rows.map((m) => m.text) });
    const replays = await resumeReplays(db, account, [
      { chatId, cursorId: null },
      { chatId: randomUUID(), cursorId: null },
      { chatId, cursorId: elsewhere.id },
      { chatId: otherChat, cursorId: null },
      { chatId, cursorId: stored.id },
    ], 10);
    assert.deepEqual(replays.map(texts), [
      { afterSeq: 0, lastSeq: 1, texts: ['one'] },
      { missing: 'chat' },
      { missing: 'cursor' },
      { afterSeq: 0, lastSeq: 1, texts: ['two'] },
      { afterSeq: 1, lastSeq: 1, texts: [] },
    ]);
    const [row] = (replays[0] as { rows: unknown[] }).rows;
    assert.deepEqual(row, { id: stored.id, text: 'one', member_id: memberId, user_name: 'nick_of_u', created_at: stored.created_at, seq: 1 });
    assert.deepEqual(await resumeReplays(db, stranger, [{ chatId, cursorId: null }], 10), [{ missing: 'chat' }]);
    assert.deepEqual(await resumeReplays(db, account, [], 10), []);
    // At most `limit` messages per chat, the chat's last position beside them.
    const third = await insertMessage(db, chatId, memberId, account, 'three');
    assert.ok('id' in third);
    assert.deepEqual((await resumeReplays(db, account, [{ chatId, cursorId: null }, { chatId: otherChat, cursorId: null }], 1)).map(texts), [
      { afterSeq: 0, lastSeq: 2, texts: ['one'] },
      { afterSeq: 0, lastSeq: 1, texts: ['two'] },
    ]);
  });

  it('searchExact with a word and two symbol runs finds only the messages that have all of them', async () => {
    const account = await accountWithMessages(['party 🎉 🎂', 'party 🎉', 'party 🎂']);
    const found = await searchExact(harness().infra.db, account, 'party 🎉 🎂', 10, 5000);
    assert.deepEqual(found.map((m) => m.text), ['party 🎉 🎂']);
  });

  it('markFirstUse records the first use of a live session once: true the first time, false after, and for revoked or unknown sessions', async () => {
    const { client } = harness().app;
    const { db } = harness().infra;
    const account = await accountOf((await buildUser(client)).userName);
    const [live, revoked] = [randomBytes(32), randomBytes(32)];
    const expiresAt = new Date(Date.now() + 3_600_000);
    await insertSession(db, live, account, expiresAt);
    await insertSession(db, revoked, account, expiresAt);
    assert.equal(await revokeSession(db, revoked), true);
    assert.equal(await markFirstUse(db, live), true);
    assert.equal(await markFirstUse(db, live), false);
    assert.equal(await markFirstUse(db, revoked), false);
    assert.equal(await markFirstUse(db, randomBytes(32)), false);
    const rows = (await db('sessions').whereIn('token_hash', [live, revoked]).select('token_hash', 'first_used_at')) as { token_hash: Uint8Array; first_used_at: Date | null }[];
    assert.equal(rows.find((r) => Buffer.from(r.token_hash).equals(live))?.first_used_at instanceof Date, true);
    assert.equal(rows.find((r) => Buffer.from(r.token_hash).equals(revoked))?.first_used_at, null);
  });

  it('sessionOf refuses a request that reached a handler without a session (401 auth-failed)', () => {
    assert.throws(
      () => sessionOf({ state: {} } as unknown as ApiContext),
      (err: unknown) => err instanceof AppError && err.status === 401 && err.code === 'auth-failed',
    );
  });
});
