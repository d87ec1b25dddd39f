import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import type { Knex } from 'knex';
import { TaskStore, type Task } from '../messenger/apps/search/tasks';
import { MODE, deleteQueues, testEnv } from './helpers/env';
import { harness, startApp, startInfra, type Running } from './helpers/harness';
import { buildChat, buildUser, joinChat, postMessage, type TestUser } from './helpers/factories';
import { ServiceProcess, freePort } from './helpers/process';
import { startSearch, waitForTask } from './helpers/search';
import { TcpProxy } from './helpers/tcp-proxy';

async function eventually<T>(ms: number, fn: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Against the real RabbitMQ, with real consumer processes. Each test uses its
// own queue, so only the consumers it starts see its tasks.
if (MODE === 'services') {
  describe('search with RabbitMQ and consumer processes (services mode)', function () {
    this.timeout(60_000);
    let queue: string;
    let env: Record<string, string>;
    let web: Running;
    let user: TestUser;
    const children: ServiceProcess[] = [];
    let conn: amqp.ChannelModel;
    let ch: amqp.Channel;

    const consumer = async (extra: Record<string, string> = {}): Promise<ServiceProcess> => {
      const c = new ServiceProcess('messenger/consumer.ts', { ...env, ...extra });
      children.push(c);
      await eventually(20_000, async () => ((await ch.checkQueue(queue)).consumerCount >= 1 ? true : undefined));
      return c;
    };
    const taskRecord = async (id: string): Promise<Task | undefined> => new TaskStore(harness().infra.kv, 300).get(id);

    beforeEach(async () => {
      queue = `${testEnv().SEARCH_QUEUE}.${randomBytes(3).toString('hex')}`;
      env = testEnv({ SEARCH_QUEUE: queue, SEARCH_IN_PROCESS_CONSUMER: '0', LOG_LEVEL: 'warn' });
      web = await startApp(harness().infra, { SEARCH_QUEUE: queue, SEARCH_IN_PROCESS_CONSUMER: '0' });
      conn = await amqp.connect(env.RMQ_URL);
      ch = await conn.createChannel();
      user = await buildUser(web.client);
      const chatId = await buildChat(web.client, user.session);
      const userId = await joinChat(web.client, chatId, user.session);
      await postMessage(web.client, chatId, userId, 'the consumer found this message', user.session);
    });

    afterEach(async () => {
      for (const c of children.splice(0)) {
        c.kill();
        await c.exited;
      }
      await web.close();
      await conn.close();
      await deleteQueues(queue);
    });

    it('/health of a web process reports a search queue with no consumer (advisory: still 200), then ok once one attaches', async () => {
      const before = await web.client.get('/health').expect(200);
      const checks = (before.body as { checks: Record<string, { status: string; error?: string }> }).checks;
      assert.equal(checks.search_consumers.status, 'down');
      assert.match(String(checks.search_consumers.error), /no consumer on .*messenger-run-task-consumer/);
      await consumer();
      const after = await web.client.get('/health').expect(200);
      assert.equal((after.body as { checks: Record<string, { status: string }> }).checks.search_consumers.status, 'ok');
    });

    it('the consumer process serves /health and /metrics on METRICS_PORT, its task counts included', async () => {
      const port = await freePort();
      await consumer({ METRICS_PORT: String(port), LOG_LEVEL: 'info' });
      const taskId = await startSearch(web.client, user.session, 'consumer found');
      assert.equal(await waitForTask(web.client, user.session, taskId), 'SUCCESS');
      const health = await fetch(`http://127.0.0.1:${port}/health`);
      assert.equal(health.status, 200);
      const body = (await health.json()) as { checks: Record<string, { status: string }> };
      assert.deepEqual(Object.keys(body.checks).sort(), ['postgresql', 'rabbitmq', 'redis']);
      for (const c of Object.values(body.checks)) assert.equal(c.status, 'ok');
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /^messenger_search_tasks_total\{outcome="success"\} 1$/m);
      assert.equal((await fetch(`http://127.0.0.1:${port}/nope`)).status, 404);
    });

    it('a task waits in the durable queue until a consumer process runs it to SUCCESS', async () => {
      const taskId = await startSearch(web.client, user.session, 'consumer found');
      await web.client.get(`/v1/chats/search/status/${taskId}`, user.session).expect(200, { status: 'WAITING' });
      assert.equal((await ch.checkQueue(queue)).messageCount, 1);
      await consumer();
      assert.equal(await waitForTask(web.client, user.session, taskId), 'SUCCESS');
      const page = await web.client.get(`/v1/chats/search/${taskId}/messages?limit=10`, user.session).expect(200);
      assert.deepEqual((page.body as { messages: { text: string }[] }).messages.map((m) => m.text), ['the consumer found this message']);
    });

    it('a consumer killed in the middle of a task leaves it to the next consumer, which finishes it', async () => {
      const { db } = harness().infra;
      // Hold the messages table so the search blocks mid-task, then kill its consumer.
      const trx: Knex.Transaction = await db.transaction();
      try {
        await trx.raw('LOCK TABLE messages IN ACCESS EXCLUSIVE MODE');
        const first = await consumer();
        const taskId = await startSearch(web.client, user.session, 'consumer found');
        await eventually(20_000, async () => ((await taskRecord(taskId))?.status === 'IN_PROCESS' ? true : undefined));
        first.kill();
        await first.exited;
        await trx.rollback();
        await consumer();
        assert.equal(await waitForTask(web.client, user.session, taskId), 'SUCCESS');
        const record = await taskRecord(taskId);
        assert.equal(record?.attempts, 2, 'one interrupted run, one complete run');
        assert.equal((await ch.checkQueue(queue)).messageCount, 0);
      } finally {
        if (!trx.isCompleted()) await trx.rollback();
      }
    });

    it('a search that runs past SEARCH_TIMEOUT_MS stops and ends SUCCESS with what it found', async () => {
      const { db } = harness().infra;
      const trx: Knex.Transaction = await db.transaction();
      try {
        // The search cannot read the locked table, so it can only end by its deadline.
        await trx.raw('LOCK TABLE messages IN ACCESS EXCLUSIVE MODE');
        await consumer({ SEARCH_TIMEOUT_MS: '300' });
        const taskId = await startSearch(web.client, user.session, 'consumer found');
        assert.equal(await waitForTask(web.client, user.session, taskId, 10_000), 'SUCCESS');
        assert.equal(trx.isCompleted(), false, 'the lock was still held when the task finished');
        await web.client.get(`/v1/chats/search/${taskId}/messages?limit=10`, user.session).expect(200, { messages: [], next: { iterator: '0'.repeat(32) } });
      } finally {
        await trx.rollback();
      }
    });

    it('with no consumer running, an account\'s searches stop at SEARCH_MAX_UNFINISHED (429 too-many-searches); a consumer that runs them makes room', async () => {
      await web.close();
      web = await startApp(harness().infra, { SEARCH_QUEUE: queue, SEARCH_IN_PROCESS_CONSUMER: '0', SEARCH_MAX_UNFINISHED: '3' });
      const ids = [];
      for (let i = 0; i < 3; i++) ids.push(await startSearch(web.client, user.session, `consumer found ${i}`));
      for (let i = 0; i < 2; i++) await web.client.post('/v1/chats/search', { message: 'consumer found' }, user.session).expect(429, { message: 'too-many-searches' });
      assert.equal((await ch.checkQueue(queue)).messageCount, 3, 'the refused searches queued nothing');
      await consumer();
      for (const id of ids) assert.equal(await waitForTask(web.client, user.session, id), 'SUCCESS');
      assert.equal(await waitForTask(web.client, user.session, await startSearch(web.client, user.session, 'consumer found')), 'SUCCESS');
    });

    it('two consumers on one queue run each task exactly once', async () => {
      await consumer();
      await consumer();
      const ids = await Promise.all(Array.from({ length: 20 }, (_, i) => startSearch(web.client, user.session, `consumer found ${i}`)));
      for (const id of ids) assert.equal(await waitForTask(web.client, user.session, id), 'SUCCESS');
      for (const id of ids) assert.equal((await taskRecord(id))?.attempts, 1, `task ${id} ran more than once`);
    });

    it('a task that keeps failing ends FAILED after SEARCH_MAX_ATTEMPTS, and a malformed message is dead-lettered', async () => {
      // A database that does not exist: every run fails, for a reason that might pass (so it is retried).
      const missing = new URL(env.DATABASE_URL);
      missing.pathname = `${missing.pathname}_missing`;
      await consumer({ SEARCH_MAX_ATTEMPTS: '2', DATABASE_URL: missing.toString() });
      const id = await startSearch(web.client, user.session, 'consumer found');
      ch.sendToQueue(queue, Buffer.from('this is not json'), { persistent: true });
      assert.equal(await waitForTask(web.client, user.session, id, 30_000), 'FAILED');
      await web.client.get(`/v1/chats/search/${id}/messages?limit=1`, user.session).expect(400, { message: 'task-failed' });
      // Two runs that failed, then the third delivery marks it FAILED without running it.
      assert.equal((await taskRecord(id))?.attempts, 2);
      await eventually(10_000, async () => ((await ch.checkQueue(`${queue}.dead`)).messageCount === 1 ? true : undefined));
      assert.equal((await ch.checkQueue(queue)).messageCount, 0, 'nothing left looping in the queue');
    });

    it('a task PostgreSQL refuses for what it asks (a NUL in the phrase) ends FAILED after one run', async () => {
      await consumer({ SEARCH_MAX_ATTEMPTS: '3' });
      // The API refuses a NUL; a task recorded by hand has one, and PostgreSQL refuses it the same way every run.
      const store = new TaskStore(harness().infra.kv, 300);
      const owner = (await harness().infra.db('users').where({ user_name: user.userName }).first('id')).id as string;
      const poisonId = randomBytes(16).toString('hex');
      await store.create(poisonId, owner, 'bad \u0000 phrase');
      ch.sendToQueue(queue, Buffer.from(JSON.stringify({ task_id: poisonId })), { persistent: true });
      assert.equal(await waitForTask(web.client, user.session, poisonId, 30_000), 'FAILED');
      assert.equal((await taskRecord(poisonId))?.attempts, 1);
      assert.equal((await ch.checkQueue(queue)).messageCount, 0, 'nothing left in the queue');
    });
  });

  describe('PostgreSQL outage at a consumer process (services mode)', function () {
    this.timeout(90_000);

    it('tasks wait out the outage with one warning (not one per retry) and all finish SUCCESS once PostgreSQL answers, with one line saying so', async () => {
      const pgUrl = new URL(testEnv().DATABASE_URL);
      const proxy = new TcpProxy(pgUrl.hostname, Number(pgUrl.port || 5432));
      pgUrl.port = String(await proxy.up());
      const queue = `${testEnv().SEARCH_QUEUE}.pg.${randomBytes(3).toString('hex')}`;
      const web = await startApp(harness().infra, { SEARCH_QUEUE: queue, SEARCH_IN_PROCESS_CONSUMER: '0' });
      const consumer = new ServiceProcess(
        'messenger/consumer.ts',
        testEnv({ SEARCH_QUEUE: queue, SEARCH_IN_PROCESS_CONSUMER: '0', DATABASE_URL: pgUrl.toString(), DB_TIMEOUT_MS: '1000', LOG_LEVEL: 'info' }),
      );
      try {
        const u = await buildUser(web.client);
        const chatId = await buildChat(web.client, u.session);
        await postMessage(web.client, chatId, await joinChat(web.client, chatId, u.session), 'found after the outage', u.session);
        await consumer.waitFor((l) => l.msg === 'messenger-run-task-consumer started');
        await proxy.down();
        const ids = [];
        for (let i = 0; i < 3; i++) ids.push(await startSearch(web.client, u.session, 'after the outage'));
        // Several seconds of outage: at 0.5 s a retry, each task would be tried (and logged) a dozen times.
        await consumer.waitFor((l) => l.msg === 'search tasks cannot reach the database; retried with backoff until it answers');
        await new Promise((r) => setTimeout(r, 5000));
        for (const id of ids) await web.client.get(`/v1/chats/search/status/${id}`, u.session).expect(200, { status: 'WAITING' });
        await proxy.up();
        for (const id of ids) assert.equal(await waitForTask(web.client, u.session, id, 30_000), 'SUCCESS');
        const [end] = await consumer.waitFor((l) => l.msg === 'search tasks reach the database again');
        // (The driver's own line for each pooled connection the outage cut, "knex", is not about the tasks.)
        const warnings = consumer.lines.filter((l) => typeof l.level === 'number' && l.level >= 40 && l.msg !== 'knex').map((l) => l.msg);
        assert.deepEqual(warnings, ['search tasks cannot reach the database; retried with backoff until it answers']);
        assert.ok(typeof end.retries === 'number' && end.retries >= 3 && end.retries < 30, `retries ${String(end.retries)}`);
      } finally {
        consumer.kill();
        await consumer.exited;
        await web.close();
        await proxy.down();
        await deleteQueues(queue);
      }
    });
  });

  describe('RabbitMQ outage (services mode)', function () {
    this.timeout(60_000);

    it('search answers 503 while RabbitMQ is unreachable, leaves no task, and works again without a restart', async () => {
      const rmq = new URL(testEnv().RMQ_URL);
      const proxy = new TcpProxy(rmq.hostname, Number(rmq.port || 5672));
      const port = await proxy.up();
      rmq.port = String(port);
      const queue = `${testEnv().SEARCH_QUEUE}.outage`;
      const overrides = { RMQ_URL: rmq.toString(), SEARCH_QUEUE: queue };
      const infra = await startInfra(overrides);
      const app = await startApp(infra, overrides);
      const redis = new Redis(testEnv().REDIS_URL);
      try {
        const { client } = app;
        const u = await buildUser(client);
        const before = await startSearch(client, u.session, 'before the outage');
        assert.equal(await waitForTask(client, u.session, before), 'SUCCESS');
        const keys = async () => (await redis.keys(`${testEnv().REDIS_PREFIX}task:*`)).length;
        const count = await keys();
        await proxy.down();
        await client.post('/v1/chats/search', { message: 'during the outage' }, u.session).timeout(10_000).expect(503, { message: 'service-unavailable' });
        assert.equal(await keys(), count, 'a task record was left behind');
        await client.get('/ping').expect(200);
        await proxy.up();
        const after = await eventually(20_000, async () => {
          const res = await client.post('/v1/chats/search', { message: 'after the outage' }, u.session);
          return res.status === 201 ? (res.body as { task_id: string }).task_id : undefined;
        });
        assert.equal(await waitForTask(client, u.session, after), 'SUCCESS');
      } finally {
        redis.disconnect();
        await app.close();
        await infra.shutdown.run();
        await proxy.down();
        await deleteQueues(queue);
      }
    });
  });
}
