import { createHash } from 'node:crypto';
import type http from 'node:http';
import { AppError, TooManyRequests } from '../../errors';
import type { RateLimitResult } from '../../infra/kv';
import { clientAddress } from '../client-address';
import type { App, AppFactory, AppModule } from '../../types';

const SESSION_HEADER = /^session_id\s+([0-9a-fA-F-]{32,36})\s*$/i;
const PERIOD_MS = 1000;
// Probes and scrapes: they must answer even when the store behind the limit is down.
const EXEMPT = new Set(['/ping', '/health', '/metrics']);

/**
 * Request throttling: at most RPS_LIMIT requests per second per session (per
 * client address without one, and always with auth off), counted in the
 * shared store so every instance enforces one limit. `/ping`, `/health` and
 * `/metrics` are exempt: probes and scrapes must answer even when Redis,
 * which holds the counts, is down.
 * WebSocket upgrades (`GET /v1/events`) are counted the same way.
 */
const throttlingApp: AppFactory = ({ config, kv }, enabled): App => {
  const limit = config.throttling.rpsLimit;
  // Without the auth app (AUTH_DISABLED=1) no request has a session: a header
  // names nothing that a 401 could ever charge, so the address is the key.
  const sessions = enabled.has('auth');
  const trusted = new Set(config.throttling.trustedProxies);

  /**
   * Counts one request. Keyed by the token's hash without looking the
   * session up. So that made-up tokens (each a fresh key, each a database
   * lookup) cannot dodge the limit, a token that auth refuses is charged to
   * its client address's bad-token allowance (`charge`), and every request
   * with a token is refused while that allowance is used up. `header`
   * undefined: no session is checked, the address is the key.
   */
  async function count(req: http.IncomingMessage, header: string | undefined): Promise<{ r: RateLimitResult; charge: () => Promise<void> }> {
    const m = header === undefined ? null : SESSION_HEADER.exec(header);
    const address = clientAddress(req, trusted);
    const badTokens = `rw:b:${address}`;
    const r = m === null
      ? await kv.rateLimit(`rw:a:${address}`, limit, PERIOD_MS)
      : await kv.rateLimit(`rw:s:${createHash('sha256').update(m[1].replace(/-/g, '').toLowerCase()).digest('hex')}`, limit, PERIOD_MS, badTokens);
    const charge = async () => {
      if (m !== null) await kv.rateLimit(badTokens, limit, PERIOD_MS).catch(() => undefined);
    };
    return { r, charge };
  }

  function headers(r: RateLimitResult): Record<string, string> {
    return {
      'X-RateLimit-Limit': String(limit),
      'X-RateLimit-Remaining': String(r.remaining),
      'X-RateLimit-Reset': String(Math.ceil(r.resetMs / 1000)),
    };
  }

  return {
    name: 'throttling',
    requires: [],
    middleware: {
      throttle: async function throttle(ctx, next) {
        if (EXEMPT.has(ctx.path)) return next();
        // A public path checks no session: a header there would be a fresh
        // allowance per made-up id that no 401 ever charges, so it counts as none.
        const checked = sessions && ctx.state.publicPath !== true;
        const { r, charge } = await count(ctx.req, checked ? ctx.get('authorization') : undefined);
        ctx.set(headers(r));
        if (!r.allowed) throw new TooManyRequests('request-limit-exceeded', r.retryAfterMs / 1000);
        try {
          await next();
        } catch (err) {
          if (err instanceof AppError && err.status === 401) await charge();
          throw err;
        }
      },
    },
    async admitUpgrade(req) {
      const { r, charge } = await count(req, sessions ? req.headers.authorization : undefined);
      return {
        refused: r.allowed ? undefined : new TooManyRequests('request-limit-exceeded', r.retryAfterMs / 1000),
        headers: headers(r),
        unauthorized: charge,
      };
    },
    handlers: {},
  };
};

/** The throttling app. */
export const app: AppModule = { name: 'throttling', create: throttlingApp };
