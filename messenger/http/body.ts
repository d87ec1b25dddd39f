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
 * request body) read one; any other request's body is ignored, unread. A body
 * with a `Content-Encoding` other than `identity` is 415, unread.
 */
export function jsonBody(limit: number, operations: Set<string>, timeoutMs: number): ApiMiddleware {
  return async function jsonBody(ctx, next) {
    if (ctx.state.operationId === undefined || !operations.has(ctx.state.operationId)) return next();
    const encoding = ctx.get('content-encoding');
    if (encoding !== '' && encoding.split(',').some((c) => c.trim().toLowerCase() !== 'identity')) {
      // A compressed body (gzip, br, ...) was read as raw bytes: 400 for real JSON, or
      // stored as sent when the header lied. No decoder here (a zip bomb's cost for
      // bodies of at most BODY_LIMIT); RFC 7694 says which coding is accepted.
      ctx.set('Accept-Encoding', 'identity');
      ctx.set('Connection', 'close');
      throw new AppError(415, 'unsupported-media-type');
    }
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
      ctx.state.rawNumbers = topLevelNumbers(text);
    } catch {
      throw new BadRequest();
    }
    await next();
  };
}

const WS = /[ \t\n\r]*/y;
const STRING = /"(?:[^"\\]|\\.)*"/y;
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

function at(re: RegExp, text: string, i: number): string | undefined {
  re.lastIndex = i;
  return re.exec(text)?.[0];
}

/** Index just past the JSON value starting at `i` (the text is known to be valid JSON). */
function skipValue(text: string, i: number): number {
  const c = text[i];
  if (c === '"') return i + (at(STRING, text, i) ?? '"').length;
  if (c !== '{' && c !== '[') {
    let j = i;
    while (j < text.length && !',}] \t\n\r'.includes(text[j])) j++;
    return j;
  }
  let depth = 0;
  for (let j = i; j < text.length; j++) {
    const d = text[j];
    if (d === '"') j += (at(STRING, text, j) ?? '"').length - 1;
    else if (d === '{' || d === '[') depth++;
    else if (d === '}' || d === ']') {
      depth--;
      if (depth === 0) return j + 1;
    }
  }
  return text.length;
}

/**
 * The number tokens of a top-level JSON object, by key, exactly as written
 * (`12345678901234567890`, `1e21`), so a number sent where a string is
 * expected becomes the text the client wrote, not a rounded double. Empty
 * for anything that is not an object. Called on text JSON.parse accepted.
 */
export function topLevelNumbers(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = (at(WS, text, 0) ?? '').length;
  if (text[i] !== '{') return out;
  i++;
  for (;;) {
    i += (at(WS, text, i) ?? '').length;
    const key = at(STRING, text, i);
    if (key === undefined) return out;
    i += key.length;
    i += (at(WS, text, i) ?? '').length + 1; // the colon
    i += (at(WS, text, i) ?? '').length;
    const num = at(NUMBER, text, i);
    const name = JSON.parse(key) as string;
    if (num !== undefined) {
      out.set(name, num);
      i += num.length;
    } else {
      // A later duplicate key wins in JSON.parse; so it does here.
      out.delete(name);
      i = skipValue(text, i);
    }
    i += (at(WS, text, i) ?? '').length;
    if (text[i] !== ',') return out;
    i++;
  }
}
