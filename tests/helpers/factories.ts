import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Client } from './harness';

/** A unique name, so tests never collide in the shared database. */
export function uniq(prefix = 'u'): string {
  return `${prefix}_${randomBytes(6).toString('hex')}`;
}

export interface TestUser {
  userName: string;
  password: string;
  session: string;
}

/** Registers and logs in a new account. */
export async function buildUser(client: Client, overrides: Partial<Omit<TestUser, 'session'>> = {}): Promise<TestUser> {
  const userName = overrides.userName ?? uniq('user');
  const password = overrides.password ?? 'correct horse battery';
  await client.post('/v1/auth/register', { user_name: userName, password }).expect(201);
  const res = await client.post('/v1/auth/login', { user_name: userName, password }).expect(201);
  const session = (res.body as { session_id: string }).session_id;
  assert.match(session, /^[0-9a-f]{32}$/);
  return { userName, password, session };
}

/** Creates a chat as `session` and returns its id. */
export async function buildChat(client: Client, session?: string, name = uniq('chat')): Promise<string> {
  const res = await client.post('/v1/chats', { chat_name: name }, session).expect(201);
  return (res.body as { chat_id: string }).chat_id;
}

/** Joins `chatId` as `session` under `userName` and returns the user_id. */
export async function joinChat(client: Client, chatId: string, session?: string, userName = uniq('nick')): Promise<string> {
  const res = await client.post(`/v1/chats/${chatId}/users`, { user_name: userName }, session).expect(201);
  return (res.body as { user_id: string }).user_id;
}

/** Posts a message and returns its id. */
export async function postMessage(client: Client, chatId: string, userId: string, text: string, session?: string): Promise<string> {
  const res = await client.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, { message: text }, session).expect(201);
  return (res.body as { message_id: string }).message_id;
}

export interface Page {
  messages: { message_id: string; user_id: string; user_name: string; text: string; created_at: string }[];
  next: { iterator: string };
}

/** Reads one page of a chat. */
export async function getPage(client: Client, chatId: string, session: string | undefined, limit: number, from?: string): Promise<Page> {
  const q = from === undefined ? `limit=${limit}` : `limit=${limit}&from=${from}`;
  const res = await client.get(`/v1/chats/${chatId}/messages?${q}`, session).expect(200);
  return res.body as Page;
}

/**
 * Asserts a `400 bad-parameters` body: the code, and a `detail` (when given)
 * naming a field and its rule, like `limit: an integer from 1 to 1000`.
 */
export function badParameters(res: { body: unknown }): void {
  const body = res.body as { message?: unknown; detail?: unknown };
  assert.equal(body.message, 'bad-parameters');
  if (body.detail !== undefined) assert.match(String(body.detail), /^[\w.]+: \S/, `detail names a field and a rule: ${String(body.detail)}`);
  assert.deepEqual(Object.keys(body).filter((k) => k !== 'message' && k !== 'detail'), []);
}
