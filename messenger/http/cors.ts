import { AppError } from '../errors';
import type { ApiMiddleware } from '../types';

const ALLOW_HEADERS = 'Authorization, Content-Type, Idempotency-Key, X-Request-Id';
const EXPOSE_HEADERS = 'X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, X-Cache';
const ALLOW_METHODS = 'GET, HEAD, POST';

/**
 * CORS for browser clients on other origins, from an allowlist
 * (CORS_ORIGINS; empty: no other origin). Runs before routing and the
 * session check: a preflight (`OPTIONS` with `Access-Control-Request-Method`)
 * from an allowed origin is answered 204 at once, one from any other origin
 * 403 `origin-not-allowed`. Requests from an allowed origin get the
 * `Access-Control-Allow-Origin` they need; others get no CORS headers (the
 * browser then withholds the answer). Same-origin requests are untouched.
 */
export function cors(allowed: readonly string[]): ApiMiddleware {
  const origins = new Set(allowed);
  return async function cors(ctx, next) {
    const origin = ctx.get('origin');
    const preflight = ctx.method === 'OPTIONS' && ctx.get('access-control-request-method') !== '';
    if (origin === '' || !origins.has(origin)) {
      if (preflight) throw new AppError(403, 'origin-not-allowed');
      return next();
    }
    ctx.vary('Origin');
    ctx.set('Access-Control-Allow-Origin', origin);
    if (preflight) {
      ctx.set('Access-Control-Allow-Methods', ALLOW_METHODS);
      ctx.set('Access-Control-Allow-Headers', ALLOW_HEADERS);
      ctx.set('Access-Control-Max-Age', '600');
      ctx.status = 204;
      return;
    }
    ctx.set('Access-Control-Expose-Headers', EXPOSE_HEADERS);
    await next();
  };
}
