import { createHash } from 'node:crypto';
import { AppError, TooManyRequests } from '../../errors';
import { clientAddress } from '../client-address';
import type { App, AppFactory, AppModule } from '../../types';

const SESSION_HEADER = /^session_id\s+([0-9a-fA-F-]{32,36})\s*$/i;
const PERIOD_MS = 1000;
// Probes and scrapes: they must answer even when the store behind the limit is down.
const EXEMPT = new Set(['/ping', '/health', '/metrics']);

/**
 * Request throttling: at most RPS_LIMIT requests per second per session (per
 * client address without one), counted in the shared store so every instance
 * enforces one limit. `/ping`, `/health` and `/metrics` are exempt: probes
 * and scrapes must answer even when Redis, which holds the counts, is down.
 */
const throttlingApp: AppFactory = ({ config, kv }): App => {
  const limit = config.throttling.rpsLimit;
  const trusted = new Set(config.throttling.trustedProxies);
  return {
    name: 'throttling',
    requires: [],
    middleware: {
      throttle: async function throttle(ctx, next) {
        if (EXEMPT.has(ctx.path)) return next();
        // Keyed by the token's hash without looking the session up. So that
        // made-up tokens (each a fresh key, each a database lookup) cannot
        // dodge the limit, a token that auth refuses is charged to its client
        // address's bad-token allowance, and every request with a token is
        // refused while that allowance is used up.
        // A public path checks no session: a header there would be a fresh
        // allowance per made-up id that no 401 ever charges, so it counts as none.
        const m = ctx.state.publicPath === true ? null : SESSION_HEADER.exec(ctx.get('authorization'));
        const address = clientAddress(ctx, trusted);
        const badTokens = `rw:b:${address}`;
        const r = m === null
          ? await kv.rateLimit(`rw:a:${address}`, limit, PERIOD_MS)
          : await kv.rateLimit(`rw:s:${createHash('sha256').update(m[1].replace(/-/g, '').toLowerCase()).digest('hex')}`, limit, PERIOD_MS, badTokens);
        ctx.set('X-RateLimit-Limit', String(limit));
        ctx.set('X-RateLimit-Remaining', String(r.remaining));
        ctx.set('X-RateLimit-Reset', String(Math.ceil(r.resetMs / 1000)));
        if (!r.allowed) throw new TooManyRequests('request-limit-exceeded', r.retryAfterMs / 1000);
        try {
          await next();
        } catch (err) {
          if (m !== null && err instanceof AppError && err.status === 401) {
            await kv.rateLimit(badTokens, limit, PERIOD_MS).catch(() => undefined);
          }
          throw err;
        }
      },
    },
    handlers: {},
  };
};

/** The throttling app. */
export const app: AppModule = { name: 'throttling', create: throttlingApp };
