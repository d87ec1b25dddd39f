import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { toWireError } from '../errors';
import type { Logger } from '../infra/logger';
import type { UpgradeAdmission } from '../types';

/** Answers a refused upgrade with the API's usual JSON error body (and `headers`) and closes the socket. */
export function refuseUpgrade(socket: Duplex, status: number, code: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ message: code });
  const head = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`,
    'Content-Type: application/json',
    'X-Content-Type-Options: nosniff',
    'Cache-Control: no-store',
    'Connection: close',
    `Content-Length: ${Buffer.byteLength(body)}`,
  ];
  for (const [name, value] of Object.entries(headers)) head.push(`${name}: ${value}`);
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
}

/**
 * Refuses an upgrade for what was thrown, as the HTTP API answers it (the
 * one mapping, errors.ts): with the admission's X-RateLimit-* headers and
 * Retry-After when the error has one; a 401 is charged to the admission
 * (throttling's bad-token allowance), as the throttle middleware charges it.
 */
export async function refuseUpgradeFor(socket: Duplex, err: unknown, admission: UpgradeAdmission | undefined, log: Logger): Promise<void> {
  const wire = toWireError(err);
  if (wire.unexpected) log.error({ err }, 'upgrade failed');
  if (wire.status === 401) await admission?.unauthorized();
  const headers: Record<string, string> = { ...admission?.headers };
  if (wire.retryAfter !== undefined) headers['Retry-After'] = String(wire.retryAfter);
  refuseUpgrade(socket, wire.status, wire.code, headers);
}
