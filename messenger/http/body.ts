import getRawBody from 'raw-body';
import type { ApiMiddleware } from '../types';
import { AppError, BadRequest } from '../errors';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/**
 * Reads a request body as JSON, whatever Content-Type says (as the original's
 * aiohttp `request.json()` did, so `curl -d '{...}'` works), and decodes it as
 * strict UTF-8: bytes that are not valid UTF-8 are refused with 400 instead of
 * being turned into U+FFFD and stored altered. Over `limit` bytes: 413.
 * An empty body is `undefined`. Only `operations` (those swagger.yml gives a
 * request body) read one; any other request's body is ignored, unread.
 */
export function jsonBody(limit: number, operations: Set<string>, timeoutMs: number): ApiMiddleware {
  return async function jsonBody(ctx, next) {
    if (ctx.state.operationId === undefined || !operations.has(ctx.state.operationId)) return next();
    let raw: Buffer;
    let timer: NodeJS.Timeout | undefined;
    // The whole request must arrive within REQUEST_TIMEOUT_MS of its first byte being handled.
    const left = Math.max(0, timeoutMs - (Date.now() - ctx.state.startedAt));
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new AppError(408, 'request-timeout')), left);
    });
    try {
      raw = await Promise.race([getRawBody(ctx.req, { limit, length: ctx.get('content-length') || undefined }), late]);
    } catch (err) {
      if (err instanceof AppError) {
        // What is still coming is not read: answer, then close the connection.
        ctx.set('Connection', 'close');
        ctx.req.unpipe();
        throw err;
      }
      const status = (err as { status?: unknown }).status;
      if (status === 413) throw new AppError(413, 'payload-too-large');
      // Aborted, a wrong Content-Length, or a stream error: the body is unusable.
      throw new BadRequest();
    } finally {
      clearTimeout(timer);
    }
    if (raw.length === 0) return next();
    let text: string;
    try {
      text = utf8.decode(raw);
    } catch {
      throw new BadRequest();
    }
    try {
      ctx.state.body = JSON.parse(text) as unknown;
    } catch {
      throw new BadRequest();
    }
    await next();
  };
}
