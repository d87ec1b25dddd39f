import type http from 'node:http';
import { Unauthorized } from '../errors';

/**
 * The request's Authorization header; more than one is `401 auth-failed`.
 * Node keeps only the first of them in `req.headers`, while a proxy or
 * another reader in front may take another, so which session such a
 * request carries is ambiguous: it is refused rather than guessed.
 */
export function authorizationOf(req: http.IncomingMessage): string | undefined {
  const raw = req.rawHeaders;
  let seen = 0;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length === 13 && raw[i].toLowerCase() === 'authorization' && ++seen > 1) throw new Unauthorized('auth-failed');
  }
  return req.headers.authorization;
}
