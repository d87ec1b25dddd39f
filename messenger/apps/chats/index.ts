import { insertChat } from '../../db/chats';
import { joinChat } from '../../db/members';
import { NotFound } from '../../errors';
import { parseId, toWireId } from '../../ids';
import { field } from '../input';
import type { App, AppFactory, AppModule } from '../../types';

/** Chats and membership: create a chat, join it under a name. */
const chatsApp: AppFactory = ({ db }): App => ({
  name: 'chats',
  requires: [],
  middleware: {},
  handlers: {
    async createChat(ctx, req) {
      const chatName = field(req.body, 'chat_name');
      const chatId = await insertChat(db, chatName, ctx.state.session?.accountId ?? null);
      ctx.status = 201;
      ctx.body = { chat_id: toWireId(chatId) };
    },

    async joinChat(ctx, req) {
      const chatId = parseId(req.params.chat_id);
      if (chatId === null) throw new NotFound('chat-not-found');
      const userName = field(req.body, 'user_name');
      const memberId = await joinChat(db, chatId, userName, ctx.state.session?.accountId ?? null);
      if (memberId === undefined) throw new NotFound('chat-not-found');
      ctx.status = 201;
      ctx.body = { user_id: toWireId(memberId) };
    },
  },
});

/** The chats app. */
export const app: AppModule = { name: 'chats', create: chatsApp };
