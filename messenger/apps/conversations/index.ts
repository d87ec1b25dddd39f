import { chatListJson, openDirectChat } from '../../db/chats';
import { advanceMarkers, markerOf, markRead } from '../../db/read_markers';
import { findUserByName, namesByPrefix } from '../../db/users';
import { BadRequest, NotFound } from '../../errors';
import { parseId, toWireId } from '../../ids';
import { sessionOf } from '../auth';
import { intParam, queryParam } from '../input';
import type { App, AppFactory, AppModule } from '../../types';

/** An optional integer query parameter within [min, max], `fallback` when absent. */
function optionalInt(name: string, value: unknown, min: number, max: number, fallback: number): number {
  return value === undefined ? fallback : intParam(name, value, min, max);
}

/**
 * Conversations, the account-centred view: the chat list with last message
 * and unread counts, read markers, direct chats and people search. Everything
 * here belongs to an account, so the app requires `auth` (with
 * AUTH_DISABLED=1 and the default APPS it is left out, like search).
 */
const conversationsApp: AppFactory = (deps): App => {
  const { db, events, config } = deps;
  return {
    name: 'conversations',
    requires: ['auth', 'chats'],
    middleware: {},
    reactors: {
      // Posting moves the poster's marker to its message, so nobody's own
      // messages count as unread. Runs in the publishing process before its
      // 201: one statement for the flush, each (account, chat) moved to its
      // furthest message; a marker only ever moves forward, whatever order
      // posts finish in. Messages of the no_storage mode (seq 0) have no place
      // to mark.
      async 'message.stored'(stored, also) {
        const furthest = new Map<string, { accountId: string; chatId: string; seq: number; messageId: string }>();
        for (const e of stored) {
          const accountId = parseId(e.accountId);
          const chatId = parseId(e.chatId);
          if (accountId === null || chatId === null || e.seq <= 0) continue;
          const k = `${accountId}|${chatId}`;
          const seen = furthest.get(k);
          if (seen === undefined || seen.seq < e.seq) furthest.set(k, { accountId, chatId, seq: e.seq, messageId: e.messageId });
        }
        if (furthest.size === 0) return;
        const moved = await advanceMarkers(db, [...furthest.values()]);
        // In the same flush as the messages: one pub/sub message carries both.
        for (const m of moved) {
          also('read.moved', { accountId: toWireId(m.accountId), chatId: toWireId(m.chatId), messageId: m.messageId, unread: m.unread, seq: m.seq });
        }
      },
    },
    handlers: {
      async listChats(ctx, req) {
        const { accountId } = sessionOf(ctx);
        const limit = optionalInt('limit', req.query.limit, 1, 1000, 100);
        // The items come from PostgreSQL already in their wire form, as JSON text (db/chats.ts).
        const chats = await chatListJson(db, accountId, limit);
        ctx.status = 200;
        ctx.type = 'application/json';
        ctx.body = `{"chats":${chats}}`;
      },

      async markRead(ctx, req) {
        const { accountId } = sessionOf(ctx);
        const chatId = parseId(req.params.chat_id);
        if (chatId === null) throw new NotFound('chat-not-found');
        const messageId = parseId(req.body.message_id);
        const res = await markRead(db, accountId, chatId, messageId);
        if ('missing' in res) {
          if (res.missing === 'chat') throw new NotFound('chat-not-found');
          // no_storage: a live message is never stored, so it has no place in
          // the chat order to mark and is never counted in `unread`. Reading
          // one leaves the marker where it is and answers the count as it
          // stands; the account's other tabs and devices, which counted the
          // message live too, are told it was read: a `read` frame with seq 0,
          // no place in the order (docs/storage-modes.md#read-markers-and-unread).
          // In the other modes a message that is not found is a bad cursor.
          if (config.messageStorage === 'no_storage' && messageId !== null) {
            const { unread } = await markerOf(db, accountId, chatId);
            await events.publish('read.moved', { accountId: toWireId(accountId), chatId: toWireId(chatId), messageId: toWireId(messageId), unread, seq: 0 });
            ctx.status = 200;
            ctx.body = { unread };
            return;
          }
          throw new BadRequest('bad-cursor');
        }
        if (res.moved) {
          await events.publish('read.moved', {
            accountId: toWireId(accountId),
            chatId: toWireId(chatId),
            messageId: toWireId(messageId as string),
            unread: res.unread,
            seq: res.seq,
          });
        }
        ctx.status = 200;
        ctx.body = { unread: res.unread };
      },

      async createDirectChat(ctx, req) {
        const session = sessionOf(ctx);
        const other = await findUserByName(db, req.body.user_name);
        if (other === undefined) throw new NotFound('user-not-found');
        if (other.id === session.accountId) throw new BadRequest();
        const chat = await openDirectChat(db, session.accountId, other.id);
        // The other side's join first: each instance indexes the chat's creator
        // (the caller) on its first event and the joining account on each, so
        // with this order both accounts' tabs get both frames. In join order
        // (caller first) the other side was not indexed yet when the caller's
        // frame went out, and its tabs never learnt the caller's identity
        // (until 2026-12-07).
        const members = [...chat.members.filter((m) => m.account_id !== session.accountId), ...chat.members.filter((m) => m.account_id === session.accountId)];
        for (const m of members) {
          await events.publish('member.joined', {
            chatId: toWireId(chat.chatId),
            userId: toWireId(m.id),
            userName: m.user_name,
            accountId: toWireId(m.account_id),
          });
        }
        ctx.status = 201;
        ctx.body = { chat_id: toWireId(chat.chatId), user_id: toWireId(chat.memberId) };
      },

      async searchUsers(ctx, req) {
        const prefix = queryParam(req.query.prefix);
        if (prefix === undefined || [...prefix].length < 3) throw new BadRequest();
        const limit = optionalInt('limit', req.query.limit, 1, 50, 20);
        const names = await namesByPrefix(db, prefix, limit);
        ctx.status = 200;
        ctx.body = { users: names.map((user_name) => ({ user_name })) };
      },
    },
  };
};

/** The conversations app. */
export const app: AppModule = { name: 'conversations', create: conversationsApp };
