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

/**
 * An integer query parameter within [min, max], written as plain digits; else
 * 400 bad-parameters with the rule in `detail`, as swagger.yml's validation
 * words it. Validation coerces `1e2`, `1.0` or `0x10` to an integer and lets
 * them through; they are refused here, with the same detail.
 */
export function intParam(name: string, value: unknown, min: number, max: number): number {
  const s = Array.isArray(value) ? undefined : value;
  const refused = () => new BadRequest('bad-parameters', `${name}: an integer from ${min} to ${max}`);
  if (typeof s !== 'string' && typeof s !== 'number') throw refused();
  const text = String(s);
  if (!/^\d+$/.test(text)) throw refused();
  const n = Number(text);
  if (n < min || n > max) throw refused();
  return n;
}

/** A single string query parameter, or undefined when absent. */
export function queryParam(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new BadRequest();
  return value;
}
