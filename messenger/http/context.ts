import { randomUUID } from 'node:crypto';
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { errorBody, toWireError } from '../errors';
import { describeFailure } from '../infra/errors';
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
      else if (wire.status === 503) {
        // The service's words (which backend, why), not a driver's: ioredis says "Stream isn't writeable ...".
        const { backend, reason } = describeFailure(err);
        ctx.state.log.warn({ ...(backend === undefined ? {} : { backend }), err: reason }, 'backend unavailable');
      }
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

const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})/;

/**
 * The access-log line and request metrics of an HTTP upgrade (a WebSocket
 * handshake never enters Koa): the status is read from the first bytes
 * written to the socket, the 101 of ws or an app's refusal alike. Upgrades
 * are `openEvents` on /v1/events and `unrouted` elsewhere.
 */
export function observeUpgrade(log: Logger, req: http.IncomingMessage, socket: Duplex): void {
  const started = process.hrtime.bigint();
  const incoming = req.headers['x-request-id'];
  const requestId = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  const op = path === '/v1/events' ? 'openEvents' : undefined;
  const write = socket.write.bind(socket) as (...args: unknown[]) => boolean;
  const end = socket.end.bind(socket) as (...args: unknown[]) => Duplex;
  let done = false;
  const seen = (chunk: unknown): void => {
    if (done) return;
    done = true;
    socket.write = write as Duplex['write'];
    socket.end = end as Duplex['end'];
    const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.subarray(0, 16).toString('latin1') : '';
    const status = Number(STATUS_LINE.exec(text)?.[1] ?? 0);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    observeRequest(op ?? 'unrouted', status, ms / 1000);
    log.info({ requestId, method: req.method, path, op, status, ms: Math.round(ms * 100) / 100 }, 'request');
  };
  socket.write = ((chunk: unknown, ...rest: unknown[]) => {
    seen(chunk);
    return write(chunk, ...rest);
  }) as Duplex['write'];
  socket.end = ((chunk?: unknown, ...rest: unknown[]) => {
    if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) seen(chunk);
    return end(chunk, ...rest);
  }) as Duplex['end'];
}
