import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { searchExact, searchFuzzy, type FoundMessage } from '../messenger/db/search';
import { TaskStore } from '../messenger/apps/search/tasks';
import { MAX_RESULTS, SearchWorker, parseTaskMessage, type SearchQueries } from '../messenger/apps/search/worker';
import { PoisonMessage, RetryLater } from '../messenger/infra/broker';
import { searchTaskDuration, searchTasks } from '../messenger/infra/metrics';
import { loadConfig } from '../messenger/config';
import { createLogger } from '../messenger/infra/logger';
import pino from 'pino';
import { Writable } from 'node:stream';
import { testEnv } from './helpers/env';
import { harness } from './helpers/harness';

/**
 * The search worker on its own, with its two queries replaced by fakes: what
 * it does with a queue message, which queries it runs with which arguments,
 * what it stores and what it counts in its metrics. The real queries are
 * tested through the API in search.test.ts.
 */

function testWorker(settings: Record<string, string>, queries: Partial<SearchQueries>, log = createLogger('silent')) {
  const { db, kv } = harness().infra;
  const store = new TaskStore(kv, 300);
  const config = loadConfig(testEnv(settings)).search;
  const worker = new SearchWorker(db, store, config, log, { exact: searchExact, near: searchFuzzy, ...queries });
  return { store, worker, config };
}

/** A logger whose JSON records are kept in `records`. */
function capturingLogger() {
  const records: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') records.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), records };
}

const taskMessage = (id: string): Buffer => Buffer.from(JSON.stringify({ task_id: id }));
const newId = (): string => randomBytes(16).toString('hex');
const owner = (): string => '0190f0e0-0000-7000-8000-' + randomBytes(6).toString('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A found message as the queries return it (dashed UUIDs, a Date, its place in its chat). */
function found(createdAt: number, id = owner(), seq = 1): FoundMessage {
  return {
    id,
    chat_id: owner(),
    member_id: owner(),
    user_name: `name ${id.slice(-4)}`,
    text: `text ${id.slice(-4)}`,
    created_at: new Date(createdAt),
    seq,
  };
}

/** Reads the search task counter (by outcome) and the duration histogram (count and sum by outcome). */
async function metrics() {
  const tasks = new Map<string, number>();
  for (const v of (await searchTasks.get()).values) tasks.set(String(v.labels.outcome), v.value);
  const count = new Map<string, number>();
  const sum = new Map<string, number>();
  for (const v of (await searchTaskDuration.get()).values) {
    const name = (v as { metricName?: string }).metricName ?? '';
    if (name.endsWith('_count')) count.set(String(v.labels.outcome), v.value);
    if (name.endsWith('_sum')) sum.set(String(v.labels.outcome), v.value);
  }
  return { tasks, count, sum };
}

type Metrics = Awaited<ReturnType<typeof metrics>>;

/** What changed between two metric readings: counter increments and histogram count/sum, by outcome. */
function delta(before: Metrics, after: Metrics) {
  const diff = (a: Map<string, number>, b: Map<string, number>) => {
    const out: Record<string, number> = {};
    for (const [k, v] of b) if (v !== (a.get(k) ?? 0)) out[k] = v - (a.get(k) ?? 0);
    return out;
  };
  return { tasks: diff(before.tasks, after.tasks), count: diff(before.count, after.count), sum: diff(before.sum, after.sum) };
}

describe('search worker: queue messages', () => {
  it('reads {"task_id": "<32 lowercase hex>"} and nothing else', () => {
    const id = newId();
    assert.equal(parseTaskMessage(taskMessage(id)), id);
    assert.equal(parseTaskMessage(Buffer.from(`{"task_id":"${id}","extra":1}`)), id);
  });

  it('dead-letters (PoisonMessage) a body that is not JSON', () => {
    for (const body of ['', '{', 'task', '{"task_id": "ab"']) {
      assert.throws(() => parseTaskMessage(Buffer.from(body)), (err: unknown) => {
        assert.ok(err instanceof PoisonMessage, `${body}: ${String(err)}`);
        assert.equal(err.message, 'task message is not JSON');
        return true;
      });
    }
  });

  it('dead-letters (PoisonMessage) JSON without a valid task_id', () => {
    const id = newId();
    const bodies = [
      'null', '42', '"x"', '[]', `["${id}"]`, '{}', `{"id":"${id}"}`, `{"task_id":null}`, `{"task_id":7}`,
      `{"task_id":"${id.toUpperCase()}"}`, `{"task_id":"${id.slice(1)}"}`, `{"task_id":"${id}0"}`,
      `{"task_id":"x${id}"}`, `{"task_id":"${id}\\n"}`, `{"task_id":"${id.slice(0, 31)}g"}`,
    ];
    for (const body of bodies) {
      assert.throws(() => parseTaskMessage(Buffer.from(body)), (err: unknown) => {
        assert.ok(err instanceof PoisonMessage, `${body}: ${String(err)}`);
        assert.equal(err.message, 'task message has no valid task_id', body);
        return true;
      });
    }
  });

  it('handle() rejects a poison message with PoisonMessage, running no query', async () => {
    let queries = 0;
    const { worker } = testWorker({}, { exact: async () => (queries++, []), near: async () => (queries++, []) });
    await assert.rejects(worker.handle(Buffer.from('not json')), PoisonMessage);
    await assert.rejects(worker.handle(Buffer.from('{"task_id":"nope"}')), PoisonMessage);
    assert.equal(queries, 0);
  });

  it('acknowledges (resolves) an unknown or finished task without running it again or counting it', async () => {
    let queries = 0;
    const { store, worker } = testWorker({}, { exact: async () => (queries++, []), near: async () => (queries++, []) });
    const done = await store.create(newId(), owner(), 'already done');
    await store.succeed(await store.start(done), []);
    const failed = await store.create(newId(), owner(), 'already failed');
    await store.fail(failed);
    const before = await metrics();
    await worker.handle(taskMessage(newId()));
    await worker.handle(taskMessage(done.id));
    await worker.handle(taskMessage(failed.id));
    assert.equal(queries, 0);
    assert.deepEqual(delta(before, await metrics()).tasks, {});
    const doneNow = await store.get(done.id);
    assert.equal(doneNow?.status, 'SUCCESS');
    assert.equal(doneNow?.attempts, 1);
    assert.deepEqual(await store.results(done.id), []);
    const failedNow = await store.get(failed.id);
    assert.equal(failedNow?.status, 'FAILED');
    assert.equal(failedNow?.attempts, 0);
  });
});

describe('search worker: running a task', () => {
  it('stores the results as message ids in wire form, newest first, ties broken by the later place in the chat (seq), then the larger id', async () => {
    const t = Date.now() - 60_000;
    // Same instant for three of them (one batch): the later place first, whatever the ids; then the larger id.
    const a = found(t, '0190f0e0-0000-7000-8000-00000000000a', 3);
    const b = found(t, '0190f0e0-0000-7000-8000-00000000000b', 2);
    const c = found(t, '0190f0e0-0000-7000-8000-00000000000c', 2);
    const newest = found(t + 1000, '0190f0e0-0000-7000-8000-000000000001');
    const oldest = found(t - 1000, '0190f0e0-0000-7000-8000-0000000000ff');
    const { store, worker } = testWorker({}, {
      exact: async () => [b, oldest, c],
      near: async () => [a, newest],
    });
    const id = newId();
    await store.create(id, owner(), 'some phrase');
    await worker.handle(taskMessage(id));
    assert.equal((await store.get(id))?.status, 'SUCCESS');
    const wire = (m: FoundMessage) => m.id.replace(/-/g, '');
    assert.deepEqual(await store.results(id), [newest, a, c, b, oldest].map(wire));
  });

  it('passes the owner, the phrase, the limits, the exact matches to exclude and the time left to the queries', async () => {
    const calls: { exact: unknown[][]; near: unknown[][] } = { exact: [], near: [] };
    const exact = [found(Date.now() - 2000), found(Date.now() - 1000)];
    const { store, worker, config } = testWorker({ SEARCH_TIMEOUT_MS: '4000' }, {
      exact: async (_db, ...args) => (calls.exact.push(args), exact),
      near: async (_db, ...args) => (calls.near.push(args), []),
    });
    assert.equal(config.timeoutMs, 4000);
    const id = newId();
    const who = owner();
    await store.create(id, who, 'the phrase');
    await worker.handle(taskMessage(id));
    assert.equal(calls.exact.length, 1);
    assert.equal(calls.near.length, 1);
    const [eOwner, ePhrase, eLimit, eMs] = calls.exact[0] as [string, string, number, number];
    assert.deepEqual([eOwner, ePhrase, eLimit], [who, 'the phrase', MAX_RESULTS]);
    assert.ok(eMs > 3000 && eMs <= 4000, `exact query given ${eMs} ms of 4000`);
    const [nOwner, nPhrase, nExclude, nLimit, nMs] = calls.near[0] as [string, string, string[], number, number];
    assert.deepEqual([nOwner, nPhrase, nExclude, nLimit], [who, 'the phrase', exact.map((m) => m.id), MAX_RESULTS - 2]);
    assert.ok(nMs > 3000 && nMs <= eMs, `near query given ${nMs} ms (exact had ${eMs})`);
    assert.equal(MAX_RESULTS, 100);
  });

  it('skips the near-match query when the exact matches fill all 100 results; with 99 it asks for 1 more', async () => {
    for (const n of [MAX_RESULTS, MAX_RESULTS - 1]) {
      const nearCalls: number[] = [];
      const exact = Array.from({ length: n }, (_, i) => found(Date.now() - 100_000 + i));
      const { store, worker } = testWorker({}, {
        exact: async () => exact,
        near: async (_db, _owner, _phrase, _exclude, limit) => (nearCalls.push(limit), [found(Date.now())]),
      });
      const id = newId();
      await store.create(id, owner(), 'many matches');
      await worker.handle(taskMessage(id));
      assert.deepEqual(nearCalls, n === MAX_RESULTS ? [] : [1]);
      assert.equal((await store.results(id))?.length, MAX_RESULTS);
    }
  });

  it('counts a finished task as success: one increment and one duration observation, within the time it took', async () => {
    // A query that takes a little time, so the observed duration cannot be 0.
    const { store, worker } = testWorker({}, { exact: async () => (await sleep(20), [found(Date.now())]), near: async () => [] });
    const id = newId();
    await store.create(id, owner(), 'counted');
    const before = await metrics();
    const started = Date.now();
    await worker.handle(taskMessage(id));
    const took = (Date.now() - started) / 1000;
    const d = delta(before, await metrics());
    assert.deepEqual(d.tasks, { success: 1 });
    assert.deepEqual(d.count, { success: 1 });
    const seconds = d.sum.success ?? 0;
    // Both are whole milliseconds; the histogram's sum adds a floating-point error.
    assert.ok(seconds >= 0.015 && seconds <= took + 0.001, `observed ${seconds} s of ${took} s`);
  });

  it('a run that fails puts the message back (rejects) and counts a retry; the last allowed attempt counts failed', async () => {
    const { store, worker } = testWorker({ SEARCH_MAX_ATTEMPTS: '2' }, {
      exact: async () => {
        throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' });
      },
    });
    const id = newId();
    await store.create(id, owner(), 'failing');
    const before = await metrics();
    await assert.rejects(worker.handle(taskMessage(id)), /connection reset/);
    assert.deepEqual(delta(before, await metrics()).tasks, { retry: 1 });
    assert.equal((await store.get(id))?.status, 'IN_PROCESS');
    await assert.rejects(worker.handle(taskMessage(id)), /connection reset/);
    assert.deepEqual(delta(before, await metrics()).tasks, { retry: 2 });
    // Two attempts used up: the third delivery marks it FAILED and resolves (the message is acknowledged).
    await worker.handle(taskMessage(id));
    const d = delta(before, await metrics());
    assert.deepEqual(d.tasks, { retry: 2, failed: 1 });
    assert.deepEqual(d.count, {});
    const record = await store.get(id);
    assert.equal(record?.status, 'FAILED');
    assert.equal(record?.attempts, 2);
  });

  it('a run that cannot reach the database (refused, no pooled connection in time) is retried without counting an attempt: after the outage the task ends SUCCESS', async () => {
    let outage = 4;
    const { store, worker } = testWorker({ SEARCH_MAX_ATTEMPTS: '2' }, {
      exact: async () => {
        outage -= 1;
        if (outage >= 2) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
        if (outage >= 0) throw Object.assign(new Error('Knex: Timeout acquiring a connection.'), { name: 'KnexTimeoutError' });
        return [found(Date.now())];
      },
      near: async () => [],
    });
    const id = newId();
    await store.create(id, owner(), 'through an outage');
    for (let i = 0; i < 4; i++) {
      await assert.rejects(worker.handle(taskMessage(id)));
      const record = await store.get(id);
      assert.deepEqual([record?.status, record?.attempts], ['WAITING', 0], `delivery ${i + 1}`);
    }
    await worker.handle(taskMessage(id));
    const record = await store.get(id);
    assert.deepEqual([record?.status, record?.attempts], ['SUCCESS', 1]);
    assert.equal((await store.results(id))?.length, 1);
  });

  it('during a database outage a task is put back after a pause as long as the outage so far (0.5 s doubling to 10 s), back to 0.5 s once the database answered; one warning per outage, one line at its end', async () => {
    let down = true;
    let clock = 1_000_000;
    const { log, records } = capturingLogger();
    const { db, kv } = harness().infra;
    const store = new TaskStore(kv, 300);
    const config = loadConfig(testEnv()).search;
    const queries: SearchQueries = {
      exact: async () => {
        if (down) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
        return [found(Date.now())];
      },
      near: async () => [],
    };
    const worker = new SearchWorker(db, store, config, log, queries, () => clock);
    /** The pause one delivery asks for, `at` ms into the outage. */
    const pauseAt = async (id: string, at: number): Promise<number> => {
      clock = 1_000_000 + at;
      const err = await worker.handle(taskMessage(id)).then(
        () => assert.fail('the delivery was acknowledged during the outage'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof RetryLater, `rejected with ${String(err)}`);
      return err.delayMs;
    };
    const ids = [newId(), newId()];
    for (const id of ids) await store.create(id, owner(), 'through an outage');
    const pauses = [];
    for (const at of [0, 500, 1000, 2000, 4000, 8000, 16_000, 26_000, 600_000]) pauses.push(await pauseAt(ids[0], at));
    assert.deepEqual(pauses, [500, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
    // Another task in hand during the same outage waits as long, not from 0.5 s again.
    assert.equal(await pauseAt(ids[1], 600_000), 10_000);
    down = false;
    clock = 1_000_000 + 600_500;
    await worker.handle(taskMessage(ids[0]));
    assert.equal((await store.get(ids[0]))?.status, 'SUCCESS');
    // A new outage starts again at 0.5 s.
    down = true;
    assert.equal(await pauseAt(ids[1], 700_000), 500);
    const said = records.filter((r) => (r.level as number) >= 40 || /database/.test(String(r.msg))).map((r) => [r.level, r.msg]);
    assert.deepEqual(said, [
      [40, 'search tasks cannot reach the database; retried with backoff until it answers'],
      [30, 'search tasks reach the database again'],
      [40, 'search tasks cannot reach the database; retried with backoff until it answers'],
    ]);
    const end = records.find((r) => r.msg === 'search tasks reach the database again');
    assert.deepEqual([end?.downMs, end?.retries], [600_500, 10]);
  });

  it('a near-match query failing with an error other than a timeout fails the run (retried), storing nothing', async () => {
    const { store, worker } = testWorker({}, {
      exact: async () => [found(Date.now())],
      near: async () => {
        throw Object.assign(new Error('out of memory'), { code: '53200' });
      },
    });
    const id = newId();
    await store.create(id, owner(), 'near fails');
    await assert.rejects(worker.handle(taskMessage(id)), /out of memory/);
    assert.equal((await store.get(id))?.status, 'IN_PROCESS');
    assert.equal(await store.results(id), undefined);
  });

  it('an exact query cancelled by its statement timeout (57014) ends SUCCESS with no results, counted as timeout', async () => {
    let nearCalls = 0;
    const { store, worker } = testWorker({}, {
      exact: async () => {
        throw Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' });
      },
      near: async () => (nearCalls++, []),
    });
    const id = newId();
    await store.create(id, owner(), 'slow exact');
    const before = await metrics();
    await worker.handle(taskMessage(id));
    assert.equal(nearCalls, 0);
    assert.equal((await store.get(id))?.status, 'SUCCESS');
    assert.deepEqual(await store.results(id), []);
    const d = delta(before, await metrics());
    assert.deepEqual(d.tasks, { timeout: 1 });
    assert.deepEqual(d.count, { timeout: 1 });
  });

  it('a near-match query cancelled by its statement timeout keeps the exact matches, counted as timeout', async () => {
    const exact = [found(Date.now())];
    const { store, worker } = testWorker({}, {
      exact: async () => exact,
      near: async () => {
        throw Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' });
      },
    });
    const id = newId();
    await store.create(id, owner(), 'slow near');
    const before = await metrics();
    await worker.handle(taskMessage(id));
    assert.equal((await store.get(id))?.status, 'SUCCESS');
    assert.deepEqual(await store.results(id), [exact[0].id.replace(/-/g, '')]);
    assert.deepEqual(delta(before, await metrics()).tasks, { timeout: 1 });
  });

  it('an exact query that ends past the deadline but within the grace keeps its matches and skips the near query', async () => {
    const TIMEOUT = 300;
    let nearCalls = 0;
    const exact = [found(Date.now())];
    const { store, worker } = testWorker({ SEARCH_TIMEOUT_MS: String(TIMEOUT) }, {
      // Answers 100 ms after the deadline: the database's own timeout did not
      // fire, the worker's backstop (200 ms past the deadline) has not yet.
      exact: async (_db, _o, _p, _l, timeoutMs) => (await sleep(timeoutMs + 100), exact),
      near: async () => (nearCalls++, []),
    });
    const id = newId();
    await store.create(id, owner(), 'late exact');
    const before = await metrics();
    await worker.handle(taskMessage(id));
    assert.equal(nearCalls, 0, 'no time was left for the near query');
    assert.equal((await store.get(id))?.status, 'SUCCESS');
    assert.deepEqual(await store.results(id), [exact[0].id.replace(/-/g, '')]);
    assert.deepEqual(delta(before, await metrics()).tasks, { timeout: 1 });
  });

  it('an exact query that never answers is given up 200 ms past the deadline: SUCCESS with no results', async () => {
    const TIMEOUT = 300;
    let nearCalls = 0;
    const { store, worker } = testWorker({ SEARCH_TIMEOUT_MS: String(TIMEOUT) }, {
      exact: () => new Promise<FoundMessage[]>(() => {}),
      near: async () => (nearCalls++, []),
    });
    const id = newId();
    await store.create(id, owner(), 'hung exact');
    const started = Date.now();
    await worker.handle(taskMessage(id));
    const took = Date.now() - started;
    assert.ok(took >= TIMEOUT + 200 - 5, `gave up after ${took} ms`);
    assert.ok(took < 5000, `gave up after ${took} ms`);
    assert.equal(nearCalls, 0);
    assert.equal((await store.get(id))?.status, 'SUCCESS');
    assert.deepEqual(await store.results(id), []);
  });

  it('a near-match query that never answers is given up 200 ms past the deadline, keeping the exact matches', async () => {
    const TIMEOUT = 300;
    const exact = [found(Date.now())];
    const { store, worker } = testWorker({ SEARCH_TIMEOUT_MS: String(TIMEOUT) }, {
      exact: async () => exact,
      near: () => new Promise<FoundMessage[]>(() => {}),
    });
    const id = newId();
    await store.create(id, owner(), 'hung near');
    const before = await metrics();
    const started = Date.now();
    await worker.handle(taskMessage(id));
    const took = Date.now() - started;
    assert.ok(took >= TIMEOUT + 200 - 5, `gave up after ${took} ms`);
    assert.ok(took < 5000, `gave up after ${took} ms`);
    assert.deepEqual(await store.results(id), [exact[0].id.replace(/-/g, '')]);
    assert.deepEqual(delta(before, await metrics()).tasks, { timeout: 1 });
  });
});

describe('search worker: logs', () => {
  it('logs a finished task at info with its task id, result count, attempt, time taken and whether it timed out', async () => {
    const { log, records } = capturingLogger();
    const { store, worker } = testWorker({}, { exact: async () => [found(Date.now()), found(Date.now() - 1)], near: async () => [] }, log);
    const id = newId();
    await store.create(id, owner(), 'logged');
    const started = Date.now();
    await worker.handle(taskMessage(id));
    const took = Date.now() - started;
    assert.equal(records.length, 1, JSON.stringify(records));
    const r = records[0];
    assert.deepEqual([r.level, r.msg, r.taskId, r.results, r.attempt, r.timedOut], [30, 'search task done', id, 2, 1, false]);
    assert.ok(typeof r.ms === 'number' && r.ms >= 0 && r.ms <= took, `ms ${String(r.ms)} of ${took}`);
  });

  it('logs a task given up after SEARCH_MAX_ATTEMPTS at error with its task id and attempts', async () => {
    const { log, records } = capturingLogger();
    const { store, worker } = testWorker({ SEARCH_MAX_ATTEMPTS: '1' }, { exact: async () => [] }, log);
    const task = await store.create(newId(), owner(), 'given up');
    await store.start(task);
    await worker.handle(taskMessage(task.id));
    assert.equal((await store.get(task.id))?.status, 'FAILED');
    assert.equal(records.length, 1, JSON.stringify(records));
    const r = records[0];
    assert.deepEqual([r.level, r.msg, r.taskId, r.attempts], [50, 'search task failed too often; marked FAILED', task.id, 1]);
  });
});
