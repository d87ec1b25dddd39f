import type http from 'node:http';
import { isIP } from 'node:net';

function normalize(addr: string | undefined): string {
  if (addr === undefined || addr === '') return 'unknown';
  // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
  return addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr;
}

/**
 * The /64 an IPv6 address belongs to (`2001:db8:1:2::/64`), anything else as
 * it is. One host or network holds a whole /64 (privacy addresses rotate
 * within it), so a limit per IPv6 address would be a fresh allowance per
 * address the client picks; per /64 it is one, as for an IPv4 address.
 */
export function addressKey(addr: string): string {
  const bare = addr.split('%')[0];
  if (isIP(bare) !== 6) return addr;
  const groups = (part: string) => (part === '' ? [] : part.split(':')).flatMap((g) => (g.includes('.') ? ['0', '0'] : [g]));
  const [head, tail] = bare.split('::');
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return `${all.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}

/**
 * The client's address (of an API request or a WebSocket upgrade), as
 * per-address limits count it: an IPv6 client by its /64 (`addressKey`).
 * `X-Forwarded-For` is believed only when the request comes from a trusted
 * proxy, and then only up to the first hop (from the right) that is not
 * itself trusted: a client cannot dodge per-address limits by sending the
 * header itself.
 */
export function clientAddress(req: http.IncomingMessage, trustedProxies: ReadonlySet<string>): string {
  return addressKey(forwardedAddress(req, trustedProxies));
}

function forwardedAddress(req: http.IncomingMessage, trustedProxies: ReadonlySet<string>): string {
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
