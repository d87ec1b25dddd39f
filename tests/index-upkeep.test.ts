import assert from 'node:assert/strict';
import { PendingListCleaner } from '../messenger/apps/messages/index-upkeep';
import { cleanSearchPendingLists } from '../messenger/db/messages';
import { createLogger } from '../messenger/infra/logger';
import { randomBytes } from 'node:crypto';
import { MODE, deleteQueues, testEnv } from './helpers/env';
import { harness, startApp } from './helpers/harness';
import { buildChat, buildUser, joinChat, postMessage } from './helpers/factories';
import { waitUntil } from './helpers/wait';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = createLogger('silent');

/** A clean that records when each run started and ends when the test says so. */
function fakeClean() {
  const starts: number[] = [];
  const ends: (() => void)[] = [];
  let answer: () => Promise<number | null> = async () => 1;
  const clean = () => {
    starts.push(Date.now());
    return new Promise<number | null>((resolve, reject) => {
      ends.push(() => answer().then(resolve, reject));
    });
  };
  return {
    clean,
    starts,
    /** Ends the run in flight. */
    finish: () => (ends.shift() as () => void)(),
    answerWith: (f: () => Promise<number | null>) => (answer = f),
  };
}

/** Waits for a condition of the fake clean (polled every 2 ms, as the gaps tested are tens of ms). */
const until = (what: string, cond: () => boolean, ms = 2000) => waitUntil(what, async () => cond(), ms, 2);

describe('PendingListCleaner (search pending lists moved beside the write path)', () => {
  it('runs once after a nudge, and nudges during a run make exactly one more run, after the gap', async () => {
    const f = fakeClean();
    const c = new PendingListCleaner(f.clean, 60, log);
    try {
      c.nudge();
      await until('the first run', () => f.starts.length === 1);
      c.nudge();
      c.nudge();
      c.nudge();
      await sleep(20);
      assert.equal(f.starts.length, 1, 'never two runs at once');
      const ended = Date.now();
      f.finish();
      await until('the second run', () => f.starts.length === 2);
      assert.ok(f.starts[1] - ended >= 55, `the second run waited the gap (${f.starts[1] - ended} ms)`);
      f.finish();
      await sleep(150);
      assert.equal(f.starts.length, 2, 'no run without a nudge');
    } finally {
      await c.stop();
    }
  });

  it('the first nudge runs at once; a gap of 0 turns it off', async () => {
    const f = fakeClean();
    const c = new PendingListCleaner(f.clean, 1000, log);
    const t0 = Date.now();
    c.nudge();
    await until('the run', () => f.starts.length === 1);
    assert.ok(f.starts[0] - t0 < 100);
    f.finish();
    await c.stop();

    const g = fakeClean();
    const off = new PendingListCleaner(g.clean, 0, log);
    off.nudge();
    await sleep(50);
    assert.equal(g.starts.length, 0);
    await off.stop();
  });

  it('stop() waits for the run in flight and drops the one waiting for its gap', async () => {
    const f = fakeClean();
    const c = new PendingListCleaner(f.clean, 10, log);
    c.nudge();
    await until('the run', () => f.starts.length === 1);
    c.nudge();
    let stopped = false;
    const stopping = c.stop().then(() => (stopped = true));
    await sleep(20);
    assert.equal(stopped, false, 'stop waits for the run');
    f.finish();
    await stopping;
    await sleep(50);
    assert.equal(f.starts.length, 1, 'the nudge made before stop() runs nothing');
    // A store after stop() (another app on the same database) nudges it again.
    c.nudge();
    await until('a run after a new nudge', () => f.starts.length === 2);
    f.finish();
    await c.stop();
  });

  it('a failed run is tried again at the next nudge; a role that does not own the indexes (42501) stops it for good', async () => {
    const f = fakeClean();
    const c = new PendingListCleaner(f.clean, 1, log);
    f.answerWith(async () => {
      throw Object.assign(new Error('connection lost'), { code: '57P01' });
    });
    c.nudge();
    await until('the run', () => f.starts.length === 1);
    f.finish();
    await sleep(20);
    assert.equal(f.starts.length, 1, 'no retry without a nudge');
    c.nudge();
    await until('the retry', () => f.starts.length === 2);
    f.answerWith(async () => {
      throw Object.assign(new Error('must be owner of index messages_text_trgm_idx'), { code: '42501' });
    });
    f.finish();
    await sleep(20);
    c.nudge();
    await sleep(50);
    assert.equal(f.starts.length, 2, 'not run again after 42501');
    await c.stop();
  });
});

if (MODE === 'services') {
  describe('cleanSearchPendingLists against PostgreSQL', () => {
    it('empties both pending lists, and answers null at once while another process holds the clean', async function () {
      this.timeout(60_000);
      const { db } = harness().infra;
      const { client } = harness().app;
      const u = await buildUser(client);
      const chatId = await buildChat(client, u.session);
      const userId = await joinChat(client, chatId, u.session);
      const lock = `SELECT pg_advisory_lock(hashtext('messenger: clean search pending lists'))`;
      const unlock = `SELECT pg_advisory_unlock(hashtext('messenger: clean search pending lists'))`;
      const other = await db.client.acquireConnection();
      try {
        // Held from before the insert, so the test app's own cleaner cannot empty the lists first.
        await other.query(lock);
        // 400 messages of some fifty distinct trigrams each: well inside the raised limits (migration 010), so they wait in the lists.
        await db.raw(
          `INSERT INTO messages (chat_id, member_id, seq, text)
           SELECT ?, ?, g, 'pending list upkeep ' || md5(g::text) FROM generate_series(1, 400) AS g`,
          [chatId, userId],
        );
        await db.raw('UPDATE chats SET last_seq = 400 WHERE id = ?', [chatId]);
        assert.equal(await cleanSearchPendingLists(db), null, 'another process is cleaning: no wait, no clean');
        await other.query(unlock);
      } finally {
        await db.client.releaseConnection(other);
      }
      let moved = await cleanSearchPendingLists(db);
      // The test app's cleaner may take the lock for a moment (it finds nothing of its own to do).
      for (let i = 0; moved === null && i < 100; i++) {
        await sleep(10);
        moved = await cleanSearchPendingLists(db);
      }
      assert.ok(moved !== null && moved > 0, `pages moved: ${moved}`);
      assert.equal(await cleanSearchPendingLists(db), 0, 'nothing left in either list');
      // The messages are still found through the indexes.
      const hit = (await db.raw(
        `SELECT count(*) AS n FROM messages WHERE chat_id = ? AND to_tsvector('simple'::regconfig, text) @@ phraseto_tsquery('simple'::regconfig, 'pending list upkeep')`,
        [chatId],
      )) as { rows: { n: string }[] };
      assert.equal(Number(hit.rows[0].n), 400);
    });
  });
}

if (MODE === 'services') {
  describe('search pending lists after posts (services mode)', function () {
    this.timeout(60_000);
    /** Pages waiting in each search index's pending list (pgstattuple, in the test database only). */
    const pendingPages = async (): Promise<number[]> => {
      const { db } = harness().infra;
      await db.raw('CREATE EXTENSION IF NOT EXISTS pgstattuple');
      const res = (await db.raw(
        `SELECT (pgstatginindex('messages_text_trgm_idx')).pending_pages AS trgm, (pgstatginindex('messages_text_fts_idx')).pending_pages AS fts`,
      )) as { rows: { trgm: number; fts: number }[] };
      return [Number(res.rows[0].trgm), Number(res.rows[0].fts)];
    };

    for (const mode of ['db_direct', 'rabbitmq'] as const) {
      it(`${mode}: the lists are emptied beside the write path soon after the messages are stored`, async () => {
        const queue = `${testEnv().SEARCH_QUEUE}.sync.${randomBytes(3).toString('hex')}`;
        const app = await startApp(harness().infra, { MESSAGE_STORAGE_TYPE: mode, SYNC_QUEUE: queue, SYNC_IN_PROCESS: '1', SYNC_FLUSH_MS: '20', NGINX_THROTTLING: '1' });
        try {
          const u = await buildUser(app.client);
          const chatId = await buildChat(app.client, u.session);
          const userId = await joinChat(app.client, chatId, u.session);
          await Promise.all(Array.from({ length: 30 }, (_, i) => postMessage(app.client, chatId, userId, `upkeep ${mode} ${i} ${randomBytes(12).toString('hex')}`, u.session)));
          const { db } = harness().infra;
          let stored = 0;
          let pages = [-1, -1];
          await waitUntil('the messages stored and both pending lists empty', async () => {
            stored = Number(((await db.raw('SELECT count(*) AS n FROM messages WHERE chat_id = ?', [chatId])) as { rows: { n: string }[] }).rows[0].n);
            pages = await pendingPages();
            return stored === 30 && pages[0] === 0 && pages[1] === 0;
          }, 5000, 20).catch(() => undefined);
          assert.equal(stored, 30);
          assert.deepEqual(pages, [0, 0], 'trigram and full-text pending pages');
        } finally {
          await app.close();
          await deleteQueues(queue);
        }
      });
    }
  });
}
