import { createHash } from 'node:crypto';
import { TooManyRequests } from '../../errors';
import { clientAddress } from '../client-address';
import type { App, AppFactory } from '../types';

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
export const throttlingApp: AppFactory = ({ config, kv }): App => {
  const limit = config.throttling.rpsLimit;
  const trusted = new Set(config.throttling.trustedProxies);
  return {
    name: 'throttling',
    requires: [],
    middleware: {
      throttle: async function throttle(ctx, next) {
        if (EXEMPT.has(ctx.path)) return next();
        // Keyed by the token's hash without looking the session up: a bad token
        // is counted like a good one and then refused by auth.
        const m = SESSION_HEADER.exec(ctx.get('authorization'));
        const key = m === null
          ? `rl:a:${clientAddress(ctx, trusted)}`
          : `rl:s:${createHash('sha256').update(m[1].replace(/-/g, '').toLowerCase()).digest('hex')}`;
        const r = await kv.rateLimit(key, limit, PERIOD_MS);
        ctx.set('X-RateLimit-Limit', String(limit));
        ctx.set('X-RateLimit-Remaining', String(r.remaining));
        ctx.set('X-RateLimit-Reset', String(Math.ceil(r.resetMs / 1000)));
        if (!r.allowed) throw new TooManyRequests('request-limit-exceeded', r.retryAfterMs / 1000);
        await next();
      },
    },
    handlers: {},
  };
};
