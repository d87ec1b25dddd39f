import { insertChat } from '../../db/chats';
import { joinChat, membersOf } from '../../db/members';
import { BadRequest, NotFound } from '../../errors';
import { parseId, toWireId, ZERO_ID } from '../../ids';
import { intParam, queryParam } from '../input';
import type { App, AppFactory, AppModule } from '../../types';

/** Chats and membership: create a chat, join it under a name, list its members. */
const chatsApp: AppFactory = ({ db, events, presence }): App => ({
  name: 'chats',
  requires: [],
  middleware: {},
  handlers: {
    async createChat(ctx, req) {
      const chatName = req.body.chat_name;
      const chatId = await insertChat(db, chatName, ctx.state.session?.accountId ?? null);
      ctx.status = 201;
      ctx.body = { chat_id: toWireId(chatId) };
    },

    async joinChat(ctx, req) {
      const chatId = parseId(req.params.chat_id);
      if (chatId === null) throw new NotFound('chat-not-found');
      const userName = req.body.user_name;
      const accountId = ctx.state.session?.accountId ?? null;
      const member = await joinChat(db, chatId, userName, accountId);
      if (member === undefined) throw new NotFound('chat-not-found');
      // Only a new membership is news; a repeat join changes nothing.
      if (member.created) {
        await events.publish('member.joined', {
          chatId: toWireId(chatId),
          userId: toWireId(member.id),
          userName: member.userName,
          accountId: accountId === null ? null : toWireId(accountId),
        });
      }
      ctx.status = 201;
      ctx.body = { user_id: toWireId(member.id) };
    },

    async listChatUsers(ctx, req) {
      const chatId = parseId(req.params.chat_id);
      if (chatId === null) throw new NotFound('chat-not-found');
      // Paged on request (docs/api.md#members-list): without `limit` and
      // `from`, every member, as the SPEC answers it.
      const limit = req.query.limit === undefined ? null : intParam('limit', req.query.limit, 1, 1000);
      const from = queryParam(req.query.from);
      const cursorId = from === undefined ? ZERO_ID : parseId(from);
      if (cursorId === null) throw new BadRequest('bad-cursor');
      const after = toWireId(cursorId) === ZERO_ID ? null : cursorId;
      const members = await membersOf(db, chatId, ctx.state.session?.accountId ?? null, after, limit);
      if (members === undefined) throw new NotFound('chat-not-found');
      if (members === 'bad-cursor') throw new BadRequest('bad-cursor');
      const accounts = members.flatMap((m) => (m.account_id === null ? [] : [m.account_id]));
      const online = await presence.online(accounts.map(toWireId));
      ctx.status = 200;
      ctx.body = {
        users: members.map((m) => ({
          user_id: toWireId(m.id),
          user_name: m.user_name,
          online: m.account_id !== null && online.has(toWireId(m.account_id)),
        })),
        ...(limit === null && from === undefined
          ? {}
          : { next: { iterator: members.length === 0 ? toWireId(cursorId) : toWireId(members[members.length - 1].id) } }),
      };
    },
  },
});

/** The chats app. */
export const app: AppModule = { name: 'chats', create: chatsApp };
