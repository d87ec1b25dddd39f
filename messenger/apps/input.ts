import { BadRequest } from '../errors';

/** Text that PostgreSQL can store exactly as sent: no NUL, no lone UTF-16 surrogate. */
export function isStorableText(s: string): boolean {
  return !s.includes('\u0000') && s.isWellFormed();
}

/** Number of characters (Unicode code points), as a user would count them. */
export function charLength(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** An integer query parameter within [min, max], else 400 bad-parameters. */
export function intParam(value: unknown, min: number, max: number): number {
  const s = Array.isArray(value) ? undefined : value;
  if (typeof s !== 'string' && typeof s !== 'number') throw new BadRequest();
  const text = String(s);
  if (!/^\d+$/.test(text)) throw new BadRequest();
  const n = Number(text);
  if (n < min || n > max) throw new BadRequest();
  return n;
}

/** A single string query parameter, or undefined when absent. */
export function queryParam(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new BadRequest();
  return value;
}
