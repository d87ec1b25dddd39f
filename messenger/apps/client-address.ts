import type http from 'node:http';
import { isIP } from 'node:net';

function normalize(addr: string | undefined): string {
  if (addr === undefined || addr === '') return 'unknown';
  // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
  return addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr;
}

/**
 * The client's address (of an API request or a WebSocket upgrade).
 * `X-Forwarded-For` is believed only when the request comes from a trusted
 * proxy, and then only up to the first hop (from the right) that is not
 * itself trusted: a client cannot dodge per-address limits by sending the
 * header itself.
 */
export function clientAddress(req: http.IncomingMessage, trustedProxies: ReadonlySet<string>): string {
  const peer = normalize(req.socket.remoteAddress);
  if (!trustedProxies.has(peer)) return peer;
  const hops = [req.headers['x-forwarded-for'] ?? '']
    .flat()
    .join(',')
    .split(',')
    .map((h) => normalize(h.trim()))
    .filter((h) => h !== 'unknown');
  for (let i = hops.length - 1; i >= 0; i--) {
    if (!trustedProxies.has(hops[i])) return hops[i];
  }
  return hops[0] ?? peer;
}
