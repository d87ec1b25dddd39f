import { pageOfChat } from '../../db/messages';
import { deleteExpiredKeys } from '../../db/idempotency-keys';
import { IDEMPOTENCY_KEY, postMessage } from './post';
import { synchronizer } from './synchronizer';
import { pendingListCleaner } from './index-upkeep';
import { BadRequest, NotFound } from '../../errors';
import { parseId, toWireId, ZERO_ID } from '../../ids';
import { intParam, queryParam } from '../input';
import type { ApiContext, App, AppFactory, AppModule } from '../../types';

/** The `Idempotency-Key` header: absent, or 1..255 printable characters (else 400 bad-parameters). */
function idempotencyKey(ctx: ApiContext): string | undefined {
  const raw = ctx.headers['idempotency-key'];
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || !IDEMPOTENCY_KEY.test(raw)) throw new BadRequest();
  return raw;
}

/** How often expired idempotency keys are deleted (each web process; the delete is idempotent). */
const KEY_SWEEP_MS = 60 * 60 * 1000;

/**
 * Messages: post as one of your chat identities, page through a chat oldest
 * first. Posting stores by MESSAGE_STORAGE_TYPE (docs/storage-modes.md); in
 * the write-behind mode this app also runs the synchronizer in-process when
 * SYNC_IN_PROCESS is on (always with the in-process queue).
 */
const messagesApp: AppFactory = (deps): App => {
  const { config, log } = deps;
  const sync = config.messageStorage === 'rabbitmq' ? synchronizer(deps) : undefined;
  let sweep: NodeJS.Timeout | undefined;
  const sweepKeys = () => {
    deleteExpiredKeys(deps.db).then(
      (n) => n > 0 && log.info({ deleted: n }, 'expired idempotency keys deleted'),
      (err: unknown) => log.warn({ err: err instanceof Error ? err.message : err }, 'could not delete expired idempotency keys'),
    );
  };
  return {
    name: 'messages',
    requires: ['chats'],
    middleware: {},
    handlers: {
      async postMessage(ctx, req) {
        const { messageId } = await postMessage(deps, {
          chatId: req.params.chat_id,
          userId: queryParam(req.query.user_id),
          accountId: ctx.state.session?.accountId ?? null,
          text: req.body.message,
          idempotencyKey: idempotencyKey(ctx),
        });
        ctx.status = 201;
        ctx.body = { message_id: messageId };
      },

      async listMessages(ctx, req) {
        const chatId = parseId(req.params.chat_id);
        if (chatId === null) throw new NotFound('chat-not-found');
        const limit = intParam('limit', req.query.limit, 1, 1000);
        const from = queryParam(req.query.from);
        const cursorId = from === undefined ? ZERO_ID : parseId(from);
        if (cursorId === null) throw new BadRequest('bad-cursor');
        const fromStart = toWireId(cursorId) === ZERO_ID;
        const page = await pageOfChat(deps.db, chatId, ctx.state.session?.accountId ?? null, fromStart ? null : cursorId, limit);
        if ('missing' in page) {
          if (page.missing === 'chat') throw new NotFound('chat-not-found');
          throw new BadRequest('bad-cursor');
        }
        // The messages come from PostgreSQL already in their wire form, as JSON text (db/messages.ts).
        const iterator = toWireId(page.lastId ?? cursorId);
        ctx.status = 200;
        ctx.type = 'application/json';
        ctx.body = `{"messages":${page.messages},"next":{"iterator":"${iterator}"}}`;
      },
    },

    async start() {
      if (sync !== undefined) {
        if (deps.broker === undefined) throw new Error('MESSAGE_STORAGE_TYPE=rabbitmq needs a broker');
        await deps.broker.declare(config.sync.queue);
        if (config.sync.inProcess) await sync.start();
      }
      sweepKeys();
      sweep = setInterval(sweepKeys, KEY_SWEEP_MS).unref();
    },

    async stop() {
      clearInterval(sweep);
      if (sync !== undefined && config.sync.inProcess) await sync.stop();
      await pendingListCleaner(deps).stop();
    },
  };
};

/** The messages app. */
export const app: AppModule = { name: 'messages', create: messagesApp };
