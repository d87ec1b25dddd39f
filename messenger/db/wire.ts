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

/**
 * A message's wire JSON up to its time: `{"message_id":"…","user_id":"…",
 * "user_name":…,"text":…,"created_at":"`, concatenated in SPEC's key order
 * with `to_json` escaping the texts (the same escaping as row_to_json, with
 * no row to build). A page item is this and `wireMessageEnd` of the
 * message's time; the chat row keeps it for its last message (migration
 * 012), and the list finishes it with `wireMessageEnd` of the chat's
 * `last_seq_at`: a write path takes that time only once it holds the chat
 * row, in the same SET, so the head cannot carry it. NULL when any part is.
 */
export const wireMessageHead = (id: string, memberId: string, userName: string, text: string): string =>
  `'{"message_id":"' || ${wireId(id)} || '","user_id":"' || ${wireId(memberId)} || '","user_name":' || ` +
  `to_json(${userName}::text)::text || ',"text":' || to_json(${text}::text)::text || ',"created_at":"'`;

/** The rest of a message's wire JSON after `wireMessageHead`: its time and the closing brace. */
export const wireMessageEnd = (at: string): string => `${wireTime(at)} || '"}'`;

/** The texts `item` (an expression) joined as one JSON array in `orderBy` order; '[]' for none. */
export const jsonTextArray = (item: string, orderBy: string): string =>
  `'[' || coalesce(string_agg(${item}, ',' ORDER BY ${orderBy}), '') || ']'`;
