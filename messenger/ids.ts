/**
 * Ids travel as 32 lowercase hex characters; PostgreSQL stores them as uuid.
 * Input may use either the bare or the dashed form.
 */

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
