import assert from 'node:assert/strict';
import type { Client } from './harness';

export interface SearchPage {
  messages: { message_id: string; chat_id: string; user_id: string; user_name: string; text: string; created_at: string }[];
  next: { iterator: string };
}

/** Starts a search and returns its task id. */
export async function startSearch(client: Client, session: string, phrase: string): Promise<string> {
  const res = await client.post('/v1/chats/search', { message: phrase }, session).expect(201);
  const id = (res.body as { task_id: string }).task_id;
  assert.match(id, /^[0-9a-f]{32}$/);
  return id;
}

/**
 * A GET that waits out the shared per-session rate limit (RPS_LIMIT): tests
 * that post a hundred messages and then poll would otherwise meet a 429.
 */
async function getPaced(client: Client, path: string, session: string): Promise<{ body: unknown }> {
  for (;;) {
    const res = await client.get(path, session);
    if (res.status !== 429) {
      assert.equal(res.status, 200, `GET ${path}: ${res.status} ${res.text}`);
      return res;
    }
    await new Promise((r) => setTimeout(r, 1000 * Number(res.headers['retry-after'] ?? 1)));
  }
}

/** Polls the task's status until it is final (or `ms` pass) and returns it. */
export async function waitForTask(client: Client, session: string, taskId: string, ms = 15_000): Promise<string> {
  const until = Date.now() + ms;
  for (;;) {
    const res = await getPaced(client, `/v1/chats/search/status/${taskId}`, session);
    const status = (res.body as { status: string }).status;
    if (status === 'SUCCESS' || status === 'FAILED' || Date.now() > until) return status;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs a search to SUCCESS and returns every result, paging with `pageSize`. */
export async function searchAll(client: Client, session: string, phrase: string, pageSize = 1000): Promise<SearchPage['messages']> {
  const taskId = await startSearch(client, session, phrase);
  assert.equal(await waitForTask(client, session, taskId), 'SUCCESS');
  const all: SearchPage['messages'] = [];
  let from: string | undefined;
  for (;;) {
    const q = from === undefined ? `limit=${pageSize}` : `limit=${pageSize}&from=${from}`;
    const page = (await getPaced(client, `/v1/chats/search/${taskId}/messages?${q}`, session)).body as SearchPage;
    if (page.messages.length === 0) return all;
    all.push(...page.messages);
    from = page.next.iterator;
  }
}
