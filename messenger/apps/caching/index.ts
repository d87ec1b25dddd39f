import { CACHED_PAGE_PREFIX } from '../../infra/kv';
import type { App, AppFactory, ApiContext, AppModule } from '../../types';

// The spellings a cache key takes: a whole number without leading zeros, or
// an id in its wire form. The handler reads other spellings of the same value
// (`010`, a dashed or upper-case id) the same way; they are answered, never
// cached, so that no client can multiply one page into many keys.
const CANONICAL = /^(?:0|[1-9][0-9]{0,8}|[0-9a-f]{32})$/;

/**
 * The cache key of a request: its declared query parameters (the handler
 * ignores the rest, and so does the key) in a canonical order. Undefined,
 * and the request goes past the cache, when a value is not a single
 * canonical one.
 */
function queryKey(query: ApiContext['state']['query']): string | undefined {
  const parts: string[] = [];
  for (const name of Object.keys(query ?? {}).sort()) {
    const v = query?.[name];
    if (typeof v !== 'string' || !CANONICAL.test(v)) return undefined;
    parts.push(`${name}=${v}`);
  }
  return parts.join('&');
}

/**
 * The body of a stored page (`<version>\n<body>`) when it was stored at the
 * chat's current `version`; undefined when the chat has changed since.
 */
function pageAt(stored: Buffer, version: string): Buffer | undefined {
  const newline = stored.indexOf(0x0a);
  return newline >= 0 && stored.toString('latin1', 0, newline) === version ? stored.subarray(newline + 1) : undefined;
}

/**
 * Response caching of the operations swagger.yml marks `x-cache-chat` (the
 * chat pages, `GET /v1/chats/{chat_id}/messages`). A stored page carries
 * the per-chat version it was read at, which every `message.stored` event
 * bumps before the 201 of that message is sent, so no client reads a stale
 * page after its own write, on any instance.
 * A page is served from the cache only to an account already known to be
 * allowed to read the chat (remembered from an earlier successful read;
 * membership never shrinks), so the cache leaks nothing. Hits touch no
 * database: with PostgreSQL down, cached pages are still served.
 * Bounded: a chat's new pages, and the growth of its stored ones, may add
 * at most CACHE_CHAT_MAX_BYTES per CACHE_TTL_SECONDS; past that its pages are
 * answered from the database and not stored until the window ends.
 */
const cachingApp: AppFactory = ({ config, kv, log }): App => {
  const { ttlSeconds: ttl, chatMaxBytes } = config.cache;
  const versionKey = (chat: string) => `cv:${chat}`;
  const budgetKey = (chat: string) => `cb:${chat}`;

  // Chats whose version could not be bumped after a store (the store was
  // away): their cached pages lack messages, so the bump is tried again every
  // second until it is made, rather than serving those pages until they expire.
  const unbumped = new Set<string>();
  let retry: NodeJS.Timeout | undefined;
  let failing = false;
  const bump = async (chats: string[]): Promise<void> => {
    try {
      await Promise.all(chats.map((chat) => kv.incr(versionKey(chat))));
    } catch (err) {
      // A bump that did succeed is harmless to make again: it only invalidates.
      for (const chat of chats) unbumped.add(chat);
      if (!failing) log.error({ err }, 'could not invalidate cached pages; retrying every second until the store answers');
      failing = true;
      retry ??= setTimeout(() => {
        retry = undefined;
        const again = [...unbumped];
        unbumped.clear();
        void bump(again).then(() => {
          if (unbumped.size === 0 && failing) {
            failing = false;
            log.info({ chats: again.length }, 'cached pages invalidated after the store came back');
          }
        });
      }, 1000);
      retry.unref();
    }
  };

  return {
    name: 'caching',
    requires: ['messages'],
    middleware: {
      cache: async function cache(ctx, next) {
        // Which operations are cacheable is swagger.yml's word (x-cache-chat), not this app's.
        const chat = ctx.state.cacheChat;
        const query = chat === undefined || ctx.method !== 'GET' ? undefined : queryKey(ctx.state.query);
        if (chat === undefined || query === undefined) return next();
        const reader = ctx.state.session?.accountId ?? 'anyone';
        const aclKey = `acl:${chat}:${reader}`;
        // One round trip: the chat's version, the reader's permission and the stored page, which begins
        // with the version it was read at. Bytes, not strings: a hit is sent as stored (docs/performance.md).
        const pageKey = `${CACHED_PAGE_PREFIX}${chat}:${ctx.state.operationId ?? ''}:${query}`;
        const [versionBytes, allowed, stored] = await kv.mgetBytes([versionKey(chat), aclKey, pageKey]);
        const version = versionBytes === null ? '0' : versionBytes.toString();
        const page = allowed === null || stored === null ? undefined : pageAt(stored, version);
        if (page !== undefined) {
          ctx.set('X-Cache', 'HIT');
          ctx.status = 200;
          ctx.type = 'application/json';
          ctx.body = page;
          return;
        }
        ctx.set('X-Cache', 'MISS');
        await next();
        if (ctx.status !== 200) return;
        // Serialised once: the same text is stored and sent. A handler that answers JSON text (the page,
        // built by PostgreSQL) has set the JSON type; for an object, Koa keeps the type it set.
        const body = typeof ctx.body === 'string' ? ctx.body : JSON.stringify(ctx.body);
        ctx.body = body;
        try {
          // What storing adds to the chat's share: a new page whole, a stored one its growth (a page
          // that changed size with a new message); re-storing a page of the same size adds nothing.
          const value = `${version}\n${body}`;
          const added = Buffer.byteLength(value) - (stored?.length ?? 0);
          if (added > 0 && (await kv.incr(budgetKey(chat), ttl, added)) > chatMaxBytes) {
            ctx.state.log.debug({ chat }, 'chat over its cache share: page not stored');
            return;
          }
          // Stryker disable next-line StringLiteral: the acl value is never read, only whether the key exists
          await Promise.all([kv.set(pageKey, value, ttl), kv.set(aclKey, '1', ttl)]);
        } catch (err) {
          log.warn({ err }, 'could not cache a page');
        }
      },
    },
    handlers: {},
    reactors: {
      // Runs in the process that stored the messages, before their 201s are sent: one bump per chat.
      // A message with seq 0 was never stored (no_storage mode): no page changed, nothing to bump.
      async 'message.stored'(stored) {
        const chats = new Set(stored.filter((e) => e.seq > 0).map((e) => e.chatId));
        if (chats.size === 0) return;
        // The message is stored; refusing the 201 when the bump fails would invite a duplicate.
        await bump([...chats]);
      },
    },
    async stop() {
      if (retry !== undefined) clearTimeout(retry);
      retry = undefined;
    },
  };
};

/** The caching app. */
export const app: AppModule = { name: 'caching', create: cachingApp };
