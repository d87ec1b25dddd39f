import { randomUUID } from 'node:crypto';
import { errorBody, toWireError } from '../errors';
import { observeRequest } from '../infra/metrics';
import type { Logger } from '../infra/logger';
import type { ApiMiddleware } from '../types';

/** First middleware: every error becomes `{"message": code}` (errors.ts decides which); unexpected ones are logged with the request id. */
export function errorHandler(): ApiMiddleware {
  return async function errorHandler(ctx, next) {
    try {
      await next();
    } catch (err) {
      const wire = toWireError(err);
      if (wire.unexpected) ctx.state.log.error({ err }, 'unexpected error');
      else if (wire.status === 503) ctx.state.log.warn({ err: err instanceof Error ? err.message : err }, 'backend unavailable');
      ctx.status = wire.status;
      ctx.body = errorBody(wire);
      if (wire.retryAfter !== undefined) ctx.set('Retry-After', String(wire.retryAfter));
    }
  };
}

const REQUEST_ID = /^[\w.-]{1,64}$/;

/** Request id, per-request child logger, safe headers, one access-log line and the request metrics. */
export function requestContext(log: Logger): ApiMiddleware {
  return async function requestContext(ctx, next) {
    const started = process.hrtime.bigint();
    const incoming = ctx.get('x-request-id');
    const requestId = REQUEST_ID.test(incoming) ? incoming : randomUUID();
    ctx.state.requestId = requestId;
    ctx.state.startedAt = Date.now();
    ctx.state.log = log.child({ requestId });
    ctx.set('X-Request-Id', requestId);
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('Cache-Control', 'no-store');
    let failed: number | undefined;
    try {
      await next();
    } catch (err) {
      // errorHandler answers it further out; log and count the status it will send, not Koa's default 404.
      failed = toWireError(err).status;
      throw err;
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const status = failed ?? ctx.status;
      observeRequest(ctx.state.operationId ?? 'unrouted', status, ms / 1000);
      ctx.state.log.info(
        { method: ctx.method, path: ctx.path, op: ctx.state.operationId, status, ms: Math.round(ms * 100) / 100 },
        'request',
      );
    }
  };
}
