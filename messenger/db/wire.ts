/**
 * SQL fragments for statements that answer JSON text in the wire form
 * (docs/performance.md, "Lists as JSON from PostgreSQL"): one definition of
 * the form, so the chat list and a chat's page cannot drift apart or away
 * from what the JavaScript side writes (`toWireId`, `Date.toISOString`).
 */

/** A uuid expression as its wire id: 32 lowercase hex digits, as `toWireId` (ids.ts) writes it. */
export const wireId = (expr: string): string => `replace(${expr}::text, '-', '')`;

/** A timestamptz expression as ISO 8601 in UTC with milliseconds (truncated), as `Date.toISOString` writes it. */
export const wireTime = (expr: string): string => `to_char(${expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** The rows `item` (a relation name) as the text of one compact JSON array in `orderBy` order; '[]' for none. */
export const jsonArray = (item: string, orderBy: string): string =>
  `'[' || coalesce(string_agg(row_to_json(${item})::text, ',' ORDER BY ${orderBy}), '') || ']'`;
