/**
 * Ids travel as 32 lowercase hex characters; PostgreSQL stores them as uuid.
 * Input may use either the bare or the dashed form.
 */

import { randomFillSync } from 'node:crypto';

const BARE = /^[0-9a-fA-F]{32}$/;
const DASHED = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** The all-zero id: as a cursor it means "from the start". */
export const ZERO_ID = '0'.repeat(32);

/** Parses an id from the wire into PostgreSQL's dashed form, or null when malformed. */
export function parseId(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  let hex: string;
  if (BARE.test(value)) hex = value.toLowerCase();
  else if (DASHED.test(value)) hex = value.replace(/-/g, '').toLowerCase();
  else return null;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Writes a PostgreSQL uuid as the wire's 32 lowercase hex characters. */
export function toWireId(uuid: string): string {
  return uuid.replace(/-/g, '').toLowerCase();
}

/**
 * Random bytes for `uuidv7`, drawn from the CSPRNG 4 kB at a time: one
 * `randomBytes(16)` per id cost 5 µs here (a system call each), a slice of
 * the pool 0.2 µs (the way `crypto.randomUUID` keeps its entropy). Each
 * slice is used once and overwritten only by the next refill.
 */
const POOL = Buffer.alloc(16 * 256);
let poolAt = POOL.length;

/**
 * A new UUIDv7 (RFC 9562) in PostgreSQL's dashed form: 48 bits of Unix
 * milliseconds, then 74 random bits. The app makes message ids itself so an
 * id exists before its row does (write-behind mode) and so a key can be
 * mapped to it before storing; time-ordered ids also keep the primary-key
 * index appending at its right edge instead of touching random pages.
 * A few lines do not justify a dependency.
 */
export function uuidv7(now: number = Date.now()): string {
  if (poolAt === POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  const b = POOL.subarray(poolAt, poolAt + 16);
  poolAt += 16;
  b.writeUIntBE(now, 0, 6);
  b[6] = (b[6] & 0x0f) | 0x70; // version 7
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
