import { memberOfChat } from '../../db/messages';
import { releaseKey, reserveKey } from '../../db/idempotency-keys';
import { BadRequest, NotFound } from '../../errors';
import { parseId, toWireId, uuidv7 } from '../../ids';
import type { Db } from '../../infra/db';
import type { Deps } from '../../types';
import { charLength, isStorableText } from '../input';
import { GroupCommitter } from './group-commit';
import { pendingListCleaner } from './index-upkeep';
import { queuedMessage } from './synchronizer';

/** A post as it comes from any edge (HTTP POST, a WebSocket `send`). */
export interface PostInput {
  /** Raw chat id as sent (dashed or not); malformed is 404 chat-not-found. */
  chatId: string | undefined;
  /** Raw member id (`user_id`) as sent; malformed is 404 user-not-found. */
  userId: string | undefined;
  /** The poster's account; null with auth off. */
  accountId: string | null;
  text: string;
  /**
   * `Idempotency-Key` (HTTP) or `client_id` (WebSocket): one namespace per
   * account (per user_id with auth off), kept 24 h. A post with a key that
   * was answered before gets that answer and stores nothing.
   */
  idempotencyKey?: string;
}

/** What the caller answers: the message's wire id. */
export interface PostResult {
  messageId: string;
}

/** An idempotency key: 1 to 255 printable ASCII characters. */
export const IDEMPOTENCY_KEY = /^[\x20-\x7e]{1,255}$/;

const committers = new WeakMap<Db, GroupCommitter>();

/** The process's group committer for this database (one writer per pool). */
function committerOf(deps: Deps): GroupCommitter {
  let c = committers.get(deps.db);
  if (c === undefined) {
    c = new GroupCommitter(deps.db, deps.log.child({ component: 'group-commit' }), pendingListCleaner(deps));
    committers.set(deps.db, c);
  }
  return c;
}

// Membership never shrinks (nobody leaves a chat), so a positive answer can
// be remembered for a while: the write-behind and no-storage modes then post
// without touching the database.
const MEMBER_TTL_MS = 60_000;
const MEMBER_CACHE_MAX = 50_000;
const members = new Map<string, { userName: string; until: number }>();

async function memberName(deps: Deps, chatId: string, memberId: string, accountId: string | null): Promise<string> {
  const k = `${chatId}|${memberId}|${accountId ?? ''}`;
  const hit = members.get(k);
  if (hit !== undefined && hit.until > Date.now()) return hit.userName;
  const m = await memberOfChat(deps.db, chatId, memberId, accountId);
  if ('missing' in m) throw new NotFound(m.missing === 'chat' ? 'chat-not-found' : 'user-not-found');
  if (members.size >= MEMBER_CACHE_MAX) members.clear();
  members.set(k, { userName: m.userName, until: Date.now() + MEMBER_TTL_MS });
  return m.userName;
}

/**
 * Posts a message: checks the input, then by MESSAGE_STORAGE_TYPE
 * (docs/storage-modes.md):
 * - `db_direct`: stores it through the group committer and publishes
 *   `message.stored` (after commit, before the answer, so reactors such as
 *   the cache run first);
 * - `rabbitmq`: checks membership, queues it (persistent, confirmed) for the
 *   synchronizer, which stores it and publishes `message.stored`;
 * - `no_storage`: checks membership and publishes `message.stored` with
 *   seq 0 (never stored).
 * Throws the AppErrors of SPEC's POST messages. The one write path shared
 * by the HTTP handler and the real-time gateway.
 */
export async function postMessage(deps: Deps, input: PostInput): Promise<PostResult> {
  const { config, db, events } = deps;
  const chatId = parseId(input.chatId);
  if (chatId === null) throw new NotFound('chat-not-found');
  const length = charLength(input.text);
  if (length === 0 || length > config.messageMaxLength || !isStorableText(input.text)) {
    // swagger.yml's rule for the field, with the limit this server is set to (a client cannot know it otherwise).
    throw new BadRequest('bad-parameters', `message: a message that is not only whitespace, of at most ${config.messageMaxLength} characters`);
  }
  const memberId = parseId(input.userId);
  if (memberId === null) throw new NotFound('user-not-found');
  const rawKey = input.idempotencyKey;
  if (rawKey !== undefined && !IDEMPOTENCY_KEY.test(rawKey)) throw new BadRequest();
  // With auth off there are no accounts: the identity posting (user_id) owns the key.
  const key = rawKey === undefined ? undefined : { ownerId: input.accountId ?? memberId, key: rawKey };
  const id = uuidv7();

  if (config.messageStorage === 'db_direct') {
    const outcome = await committerOf(deps).submit({ id, chatId, memberId, accountId: input.accountId, text: input.text, key });
    if ('missing' in outcome) throw new NotFound(outcome.missing === 'chat' ? 'chat-not-found' : 'user-not-found');
    if ('duplicateOf' in outcome) return { messageId: toWireId(outcome.duplicateOf) };
    const row = outcome.stored;
    await events.publish('message.stored', {
      chatId: toWireId(chatId),
      messageId: toWireId(row.id),
      userId: toWireId(memberId),
      userName: row.user_name,
      accountId: input.accountId,
      text: input.text,
      createdAt: row.created_at.toISOString(),
      seq: Number(row.seq),
    });
    return { messageId: toWireId(row.id) };
  }

  const userName = await memberName(deps, chatId, memberId, input.accountId);
  const messageId = key === undefined ? id : await reserveKey(db, key.ownerId, key.key, id);

  if (config.messageStorage === 'no_storage') {
    if (messageId !== id) return { messageId: toWireId(messageId) };
    // Delivered live only; seq 0 marks a message that has no place in any page.
    await events.publish('message.stored', {
      chatId: toWireId(chatId),
      messageId: toWireId(id),
      userId: toWireId(memberId),
      userName,
      accountId: input.accountId,
      text: input.text,
      createdAt: new Date().toISOString(),
      seq: 0,
    });
    return { messageId: toWireId(id) };
  }

  // rabbitmq: a retry that finds its key queues the message again under the
  // first id: if the first publish failed, this one stores it; if it did
  // not, the synchronizer skips the stored id. So a 201 always means queued.
  const broker = deps.broker;
  if (broker === undefined) throw new Error('MESSAGE_STORAGE_TYPE=rabbitmq needs a broker');
  try {
    await broker.publish(config.sync.queue, queuedMessage({ id: messageId, chatId, memberId, accountId: input.accountId, userName, text: input.text }));
  } catch (err) {
    if (key !== undefined && messageId === id) await releaseKey(db, key.ownerId, key.key, id).catch(() => {});
    throw err;
  }
  return { messageId: toWireId(messageId) };
}
