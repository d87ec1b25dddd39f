import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MODE, deleteQueues, testEnv } from './helpers/env';
import { ServiceProcess, type LogLine } from './helpers/process';
import { TcpProxy } from './helpers/tcp-proxy';
import { waitUntil } from './helpers/wait';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The two worker roles, as their entrypoints run them. */
const ROLES = [
  { name: 'messenger-run-task-consumer', script: 'messenger/consumer.ts', consuming: 'search worker consuming', settings: (queue: string) => ({ SEARCH_QUEUE: queue }) },
  {
    name: 'messenger-run-synchronizer',
    script: 'messenger/synchronizer.ts',
    consuming: 'synchronizer consuming',
    settings: (queue: string) => ({ MESSAGE_STORAGE_TYPE: 'rabbitmq', SYNC_QUEUE: queue }),
  },
];

const isError = (l: LogLine) => typeof l.level === 'number' && l.level >= 50;
const rabbitWarning = (l: LogLine) => l.level === 40 && /rabbitmq/.test(String(l.msg));

// The worker processes against RabbitMQ behind a TCP proxy that is down or
// slow, so the shared broker is never disturbed. Each test has its own queue.
if (MODE === 'services') {
  for (const role of ROLES) {
    describe(`${role.name} start-up (services mode)`, function () {
      this.timeout(60_000);
      let proxy: TcpProxy;
      let queue: string;
      const children: ServiceProcess[] = [];

      const start = (): ServiceProcess => {
        const rmq = new URL(testEnv().RMQ_URL);
        rmq.port = String(proxy.port);
        const p = new ServiceProcess(role.script, testEnv({ ...role.settings(queue), RMQ_URL: rmq.toString(), LOG_LEVEL: 'info' }));
        children.push(p);
        return p;
      };

      beforeEach(async () => {
        queue = `${testEnv().SEARCH_QUEUE}.start.${randomBytes(3).toString('hex')}`;
        const rmq = new URL(testEnv().RMQ_URL);
        proxy = new TcpProxy(rmq.hostname, Number(rmq.port || 5672));
        await proxy.up();
      });

      afterEach(async () => {
        for (const c of children.splice(0)) {
          c.kill();
          await c.exited;
        }
        await proxy.down();
        await deleteQueues(queue);
      });

      it('while RabbitMQ is unreachable it logs a warning with its retry delay and not "started"; once it consumes, it says so', async () => {
        await proxy.down();
        const p = start();
        const [warning] = await p.waitFor(rabbitWarning);
        assert.equal(typeof warning.retryInMs, 'number', JSON.stringify(warning));
        // /health is served meanwhile (after the 5 s start-up wait for the broker) and names what is missing.
        const [listening] = await p.waitFor((l) => l.msg === 'health and metrics listening', 1, 15_000);
        const health = await fetch(`http://127.0.0.1:${(listening.address as { port: number }).port}/health`);
        assert.equal(health.status, 503);
        assert.equal(((await health.json()) as { checks: Record<string, { status: string }> }).checks.rabbitmq.status, 'down');
        await sleep(500);
        const said = p.lines.map((l) => l.msg);
        assert.ok(!said.includes(`${role.name} started`), `"started" logged while RabbitMQ was unreachable: ${JSON.stringify(said)}`);
        assert.ok(!said.includes(role.consuming), `"${role.consuming}" logged while RabbitMQ was unreachable`);
        await proxy.up();
        await p.waitFor((l) => l.msg === `${role.name} started`, 1, 20_000);
        const order = p.lines.map((l) => l.msg);
        assert.ok(order.indexOf(role.consuming) >= 0 && order.indexOf(role.consuming) < order.indexOf(`${role.name} started`), JSON.stringify(order));
        assert.deepEqual(p.lines.filter(isError), []);
      });

      it('a SIGTERM while it waits for an unreachable RabbitMQ ends it cleanly: exit 0, nothing logged as an error', async () => {
        await proxy.down();
        const p = start();
        await p.waitFor(rabbitWarning);
        p.child.kill('SIGTERM');
        assert.deepEqual(await p.exited, { code: 0, signal: null });
        assert.deepEqual(p.lines.filter(isError), []);
        assert.equal(p.stderr.join(''), '');
      });

      it('a SIGTERM at any moment of its start-up over a slow link to RabbitMQ ends it cleanly: exit 0, no "Channel ended", nothing logged as an error', async () => {
        // Every byte to RabbitMQ is 100 ms late, so the start-up's broker round trips (connect,
        // channels, queue declarations, consume) take about two seconds; a signal lands in each part.
        proxy.delayMs = 100;
        const unclean: string[] = [];
        for (const after of [0, 150, 300, 450, 600, 750, 900, 1100, 1300, 1600]) {
          const accepted = proxy.accepted;
          const p = start();
          await waitUntil(`${role.name} to connect to RabbitMQ`, async () => proxy.accepted > accepted, 20_000, 5);
          await sleep(after);
          p.child.kill('SIGTERM');
          const exit = await p.exited;
          const errors = p.lines.filter(isError).map((l) => l.msg);
          if (exit.code !== 0 || errors.length > 0 || p.stderr.length > 0) {
            unclean.push(`SIGTERM ${after} ms after connecting: exit ${JSON.stringify(exit)}, stderr ${JSON.stringify(p.stderr.join(''))}, errors ${JSON.stringify(errors)}`);
          }
        }
        assert.deepEqual(unclean, []);
      });
    });
  }
}
