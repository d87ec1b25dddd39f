import { pageOfChat, type MessageRow } from '../../db/messages';
import { postMessage } from './post';
import { BadRequest, NotFound } from '../../errors';
import { parseId, toWireId, ZERO_ID } from '../../ids';
import { field, intParam, queryParam } from '../input';
import type { App, AppFactory, AppModule } from '../../types';

/** The wire form of one message. */
function present(row: MessageRow) {
  return {
    message_id: toWireId(row.id),
    user_id: toWireId(row.member_id),
    user_name: row.user_name,
    text: row.text,
    created_at: row.created_at.toISOString(),
  };
}

/** Messages: post as one of your chat identities, page through a chat oldest first. */
const messagesApp: AppFactory = (deps): App => ({
  name: 'messages',
  requires: ['chats'],
  middleware: {},
  handlers: {
    async postMessage(ctx, req) {
      const { messageId } = await postMessage(deps, {
        chatId: req.params.chat_id,
        userId: queryParam(req.query.user_id),
        accountId: ctx.state.session?.accountId ?? null,
        text: field(req.body, 'message'),
      });
      ctx.status = 201;
      ctx.body = { message_id: messageId };
    },

    async listMessages(ctx, req) {
      const chatId = parseId(req.params.chat_id);
      if (chatId === null) throw new NotFound('chat-not-found');
      const limit = intParam(req.query.limit, 1, 1000);
      const from = queryParam(req.query.from);
      const cursorId = from === undefined ? ZERO_ID : parseId(from);
      if (cursorId === null) throw new BadRequest('bad-cursor');
      const fromStart = toWireId(cursorId) === ZERO_ID;
      const page = await pageOfChat(deps.db, chatId, ctx.state.session?.accountId ?? null, fromStart ? null : cursorId, limit);
      if ('missing' in page) {
        if (page.missing === 'chat') throw new NotFound('chat-not-found');
        throw new BadRequest('bad-cursor');
      }
      const rows = page.rows;
      const last = rows.at(-1);
      ctx.status = 200;
      ctx.body = {
        messages: rows.map(present),
        next: { iterator: last === undefined ? toWireId(cursorId) : toWireId(last.id) },
      };
    },
  },
});

/** The messages app. */
export const app: AppModule = { name: 'messages', create: messagesApp };
