import { insertMessage } from '../../db/messages';
import { BadRequest, NotFound } from '../../errors';
import { parseId, toWireId } from '../../ids';
import type { Deps } from '../../types';
import { charLength } from '../input';

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
   * The client's key for this post (`Idempotency-Key`, a WebSocket `client_id`):
   * the same key from the same account gets the first answer again.
   * Passed through by the real-time gateway; not acted on here yet.
   */
  idempotencyKey?: string;
}

/** What the caller answers: the stored message's wire id. */
export interface PostResult {
  messageId: string;
}

/**
 * Posts a message: checks the input, stores it, publishes `message.stored`
 * (after commit, before the answer, so reactors such as the cache run first).
 * Throws the AppErrors of SPEC's POST messages. The one write path shared
 * by the HTTP handler and the real-time gateway.
 */
export async function postMessage(deps: Deps, input: PostInput): Promise<PostResult> {
  const { config, db, events } = deps;
  const chatId = parseId(input.chatId);
  if (chatId === null) throw new NotFound('chat-not-found');
  const length = charLength(input.text);
  if (length === 0 || length > config.messageMaxLength) throw new BadRequest();
  const memberId = parseId(input.userId);
  if (memberId === null) throw new NotFound('user-not-found');
  const res = await insertMessage(db, chatId, memberId, input.accountId, input.text);
  if ('missing' in res) throw new NotFound(res.missing === 'chat' ? 'chat-not-found' : 'user-not-found');
  await events.publish('message.stored', {
    chatId: toWireId(chatId),
    messageId: toWireId(res.id),
    userId: toWireId(memberId),
    userName: res.user_name,
    accountId: input.accountId,
    text: input.text,
    createdAt: res.created_at.toISOString(),
    seq: Number(res.seq),
  });
  return { messageId: toWireId(res.id) };
}
