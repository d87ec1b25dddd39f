import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import { MODE, deleteQueues, testEnv } from './helpers/env';
import { harness, startApp, type Running } from './helpers/harness';
import { buildChat, buildUser, joinChat } from './helpers/factories';
import { ServiceProcess } from './helpers/process';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dashed = (hex: string) => hex.replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');

async function eventually<T>(ms: number, fn: () => Promise<T | undefined>, what = 'a condition'): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// The write-behind mode with the synchronizer as its own process
// (messenger/synchronizer.ts, what messenger-run-synchronizer runs), against
// the real RabbitMQ and PostgreSQL. Each test has its own queue.
if (MODE === 'services') {
  describe('synchronizer process (MESSAGE_STORAGE_TYPE=rabbitmq, services mode)', function () {
    this.timeout(90_000);
    const FLUSH_MS = 50;
    let queue: string;
    let env: Record<string, string>;
    let web: Running;
    let conn: amqp.ChannelModel;
    let ch: amqp.Channel;
    const children: ServiceProcess[] = [];
    let session: string;
    let chatId: string;
    let userId: string;

    const startSynchronizer = async (): Promise<ServiceProcess> => {
      const s = new ServiceProcess('messenger/synchronizer.ts', env);
      children.push(s);
      await eventually(20_000, async () => ((await ch.checkQueue(queue)).consumerCount >= 1 ? true : undefined), 'the synchronizer to consume');
      return s;
    };
    const post = async (text: string): Promise<{ status: number; id?: string }> => {
      const res = await fetch(`http://127.0.0.1:${web.client.port}/v1/chats/${chatId}/messages?user_id=${userId}`, {
        method: 'POST',
        headers: { authorization: `session_id ${session}`, 'content-type': 'application/json' },
        body: JSON.stringify({ message: text }),
      });
      const body = (await res.json()) as { message_id?: string };
      return { status: res.status, id: body.message_id };
    };
    const storedRows = async () =>
      harness().infra.db('messages').where('chat_id', dashed(chatId)).orderBy('seq').select<{ id: string; seq: string; text: string }[]>('id', 'seq', 'text');

    beforeEach(async () => {
      queue = `${testEnv().SEARCH_QUEUE}.sync.${randomBytes(3).toString('hex')}`;
      const settings = { MESSAGE_STORAGE_TYPE: 'rabbitmq', SYNC_QUEUE: queue, SYNC_FLUSH_MS: String(FLUSH_MS), SYNC_BULK_SIZE: '100' };
      env = testEnv({ ...settings, SYNC_IN_PROCESS: '0', LOG_LEVEL: 'warn' });
      web = await startApp(harness().infra, { ...settings, SYNC_IN_PROCESS: '0', NGINX_THROTTLING: '1' });
      conn = await amqp.connect(env.RMQ_URL);
      ch = await conn.createChannel();
      await ch.assertQueue(`${queue}.dead`, { durable: true });
      await ch.assertQueue(queue, { durable: true, arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${queue}.dead` } });
      const u = await buildUser(web.client);
      session = u.session;
      chatId = await buildChat(web.client, session);
      userId = await joinChat(web.client, chatId, session, 'Writer');
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

    it('a message waits in the durable queue (201 already answered) until a synchronizer process stores it', async () => {
      const { status, id } = await post('queued first');
      assert.equal(status, 201);
      assert.equal((await storedRows()).length, 0);
      assert.equal((await ch.checkQueue(queue)).messageCount, 1);
      await startSynchronizer();
      const rows = await eventually(10_000, async () => {
        const r = await storedRows();
        return r.length === 1 ? r : undefined;
      });
      assert.deepEqual([rows[0].id.replace(/-/g, ''), rows[0].text, Number(rows[0].seq)], [id, 'queued first', 1]);
      const page = await web.client.get(`/v1/chats/${chatId}/messages?limit=10`, session).expect(200);
      assert.deepEqual((page.body as { messages: { message_id: string }[] }).messages.map((m) => m.message_id), [id]);
    });

    it('/health of a web process reports a write-behind queue with no synchronizer (advisory: still 200), then ok once one attaches', async () => {
      type Checks = { checks: Record<string, { status: string; error?: string }> };
      const before = (await web.client.get('/health').expect(200)).body as Checks;
      assert.equal(before.checks.sync_consumers.status, 'down');
      assert.match(String(before.checks.sync_consumers.error), new RegExp(`no consumer on ${queue.replace(/\./g, '\\.')}: start messenger-run-synchronizer`));
      await startSynchronizer();
      const after = (await web.client.get('/health').expect(200)).body as Checks;
      assert.equal(after.checks.sync_consumers.status, 'ok');
    });

    it(`a single message under no load is stored within SYNC_FLUSH_MS + 100 ms of its 201`, async () => {
      await startSynchronizer();
      // A first message warms the connections up.
      const warm = await post('warm-up');
      await eventually(10_000, async () => ((await storedRows()).some((r) => r.id === dashed(warm.id ?? '')) ? true : undefined));
      const lags: number[] = [];
      for (let i = 0; i < 5; i++) {
        await sleep(300);
        const { status, id } = await post(`alone ${i}`);
        const answered = performance.now();
        assert.equal(status, 201);
        await eventually(5_000, async () => ((await harness().infra.db('messages').where('id', dashed(id ?? '')).first('id')) ? true : undefined));
        lags.push(performance.now() - answered);
      }
      process.stdout.write(`      201 → stored: ${lags.map((l) => l.toFixed(0)).join(', ')} ms\n`);
      for (const lag of lags) assert.ok(lag < FLUSH_MS + 100, `stored ${lag.toFixed(0)} ms after its 201`);
    });

    it('poison messages go to the dead-letter queue and the others are stored', async () => {
      await startSynchronizer();
      ch.sendToQueue(queue, Buffer.from('this is not json'), { persistent: true });
      // Well-formed, but its member does not exist: it can never be stored.
      const orphan = {
        v: 1, id: dashed(randomBytes(16).toString('hex')), chat_id: dashed(chatId), member_id: dashed('b'.repeat(32)),
        account_id: null, user_name: 'ghost', text: 'never', queued_at: Date.now(),
      };
      ch.sendToQueue(queue, Buffer.from(JSON.stringify(orphan)), { persistent: true });
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) ids.push((await post(`fine ${i}`)).id ?? '');
      await eventually(10_000, async () => ((await storedRows()).length === 10 ? true : undefined), 'the good messages');
      await eventually(10_000, async () => ((await ch.checkQueue(`${queue}.dead`)).messageCount === 2 ? true : undefined), 'two dead letters');
      assert.deepEqual((await storedRows()).map((r) => r.id.replace(/-/g, '')), ids);
      assert.equal((await ch.checkQueue(queue)).messageCount, 0, 'nothing left looping in the queue');
    });

    it('synchronizer SIGKILLed mid-batch under steady posting: after a restart every acknowledged message is stored exactly once, in order', async () => {
      const first = await startSynchronizer();
      const acked: string[][] = [];
      let running = true;
      const writer = async (w: number) => {
        const mine: string[] = [];
        acked.push(mine);
        for (let n = 0; running; n++) {
          const { status, id } = await post(`w${w} ${n}`);
          if (status === 201 && id !== undefined) mine.push(id);
        }
      };
      const load = Promise.all(Array.from({ length: 6 }, (_, w) => writer(w)));
      await sleep(1500);
      first.kill();
      await first.exited;
      await sleep(700);
      await startSynchronizer();
      await sleep(1500);
      running = false;
      await load;
      const all = acked.flat();
      assert.ok(all.length > 100, `only ${all.length} posts acknowledged`);
      const rows = await eventually(20_000, async () => {
        const r = await storedRows();
        return r.length >= all.length ? r : undefined;
      }, `${all.length} stored messages`);
      const ids = rows.map((r) => r.id.replace(/-/g, ''));
      assert.equal(new Set(ids).size, ids.length, 'a message was stored twice');
      assert.deepEqual(new Set(ids), new Set(all), 'stored messages differ from the acknowledged ones');
      assert.deepEqual(rows.map((r) => Number(r.seq)), Array.from({ length: rows.length }, (_, i) => i + 1), 'the chat order has a gap');
      // Each writer's messages are in the order it was answered.
      for (const mine of acked) assert.deepEqual(ids.filter((id) => mine.includes(id)), mine);
      process.stdout.write(`      ${all.length} acknowledged, ${rows.length} stored once each\n`);
    });
  });
}
