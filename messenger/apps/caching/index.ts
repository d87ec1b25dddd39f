import { parseId, toWireId, ZERO_ID } from '../../ids';
import type { App, AppFactory, ApiContext } from '../types';

/** The page's cache key parts, or undefined when the request is not one we cache (the handler then answers it). */
function pageParams(ctx: ApiContext): { chat: string; limit: string; from: string } | undefined {
  const chatId = parseId(ctx.state.params?.chat_id);
  const limit = ctx.query.limit;
  const from = ctx.query.from;
  if (chatId === null || typeof limit !== 'string' || !/^\d{1,4}$/.test(limit)) return undefined;
  if (from !== undefined && typeof from !== 'string') return undefined;
  const cursor = from === undefined ? ZERO_ID : parseId(from);
  if (cursor === null) return undefined;
  return { chat: toWireId(chatId), limit: String(Number(limit)), from: toWireId(cursor) };
}

/**
 * Response caching of chat pages (`GET /v1/chats/{chat_id}/messages`). Keys
 * carry a per-chat version that every stored message bumps before its 201 is
 * sent, so no client reads a stale page after its own write, on any instance.
 * A page is served from the cache only to an account already known to be
 * allowed to read the chat (remembered from an earlier successful read;
 * membership never shrinks), so the cache leaks nothing. Hits touch no
 * database: with PostgreSQL down, cached pages are still served.
 */
export const cachingApp: AppFactory = ({ config, kv, log }): App => {
  const ttl = config.cache.ttlSeconds;
  const versionKey = (chat: string) => `cv:${chat}`;

  return {
    name: 'caching',
    requires: ['messages'],
    middleware: {
      cache: async function cache(ctx, next) {
        const op = ctx.state.operationId;
        if (op === 'postMessage') {
          await next();
          if (ctx.status !== 201) return;
          const chatId = parseId(ctx.state.params?.chat_id);
          if (chatId === null) return;
          try {
            await kv.incr(versionKey(toWireId(chatId)));
          } catch (err) {
            // The message is stored; refusing the 201 now would invite a duplicate.
            ctx.state.log.error({ err }, 'could not invalidate cached pages; they may be stale until they expire');
          }
          return;
        }
        if (op !== 'listMessages' || ctx.method !== 'GET') return next();
        const p = pageParams(ctx);
        if (p === undefined) return next();
        const reader = ctx.state.session?.accountId ?? 'anyone';
        const aclKey = `acl:${p.chat}:${reader}`;
        const [version, allowed] = await kv.mget([versionKey(p.chat), aclKey]);
        const pageKey = `page:${p.chat}:${version ?? '0'}:${p.limit}:${p.from}`;
        if (allowed !== null) {
          const page = await kv.get(pageKey);
          if (page !== null) {
            ctx.set('X-Cache', 'HIT');
            ctx.status = 200;
            ctx.type = 'application/json';
            ctx.body = page;
            return;
          }
        }
        ctx.set('X-Cache', 'MISS');
        await next();
        if (ctx.status !== 200) return;
        try {
          await Promise.all([kv.set(pageKey, JSON.stringify(ctx.body), ttl), kv.set(aclKey, '1', ttl)]);
        } catch (err) {
          log.warn({ err }, 'could not cache a page');
        }
      },
    },
    handlers: {},
  };
};
