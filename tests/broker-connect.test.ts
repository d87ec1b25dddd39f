import assert from 'node:assert/strict';
import net from 'node:net';
import { ConfigError, loadConfig } from '../messenger/config';
import pino from 'pino';
import { newBroker, RabbitBroker } from '../messenger/infra/broker';
import { createLogger } from '../messenger/infra/logger';
import { MODE, testEnv } from './helpers/env';
import { waitUntil } from './helpers/wait';

const log = createLogger('silent');

describe('RabbitMQ connect attempts', function () {
  let server: net.Server;
  let broker: RabbitBroker | undefined;
  const sockets: net.Socket[] = [];
  let closed = 0;

  beforeEach(async () => {
    // A "broker" that accepts TCP connections and never says a word.
    server = net.createServer((s) => {
      sockets.push(s);
      s.on('error', () => {});
      s.on('close', () => closed++);
      s.resume();
    });
    closed = 0;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(21000 + (process.pid % 1000), '127.0.0.1', resolve);
    });
  });

  afterEach(async () => {
    await broker?.close();
    broker = undefined;
    for (const s of sockets) s.destroy();
    sockets.length = 0;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('a connect attempt to a broker that accepts TCP but never answers times out and is retried', async () => {
    const { port } = server.address() as net.AddressInfo;
    broker = new RabbitBroker(`amqp://guest:guest@127.0.0.1:${port}`, log, 300);
    await broker.start(50);
    assert.equal(broker.isConnected(), false);
    // First attempt: 300 ms of silence, then 200 ms of backoff, then a second connection.
    await waitUntil('a second connect attempt', async () => sockets.length >= 2, 5000);
    assert.equal(broker.isConnected(), false);
    // The timed-out attempt closed its socket rather than leaving it open.
    await waitUntil('the timed-out socket is closed by the client', async () => closed >= 1, 2000);
  });
});

describe('RMQ_CONNECT_TIMEOUT_MS', () => {
  it('bounds each connect attempt of the broker the process builds (default 10000); outside 100-600000 it stops start-up naming it', () => {
    const rmq = { RMQ_URL: 'amqp://guest:guest@127.0.0.1:5672' };
    const set = newBroker(loadConfig(testEnv({ ...rmq, RMQ_CONNECT_TIMEOUT_MS: '300' })), log);
    assert.ok(set instanceof RabbitBroker);
    assert.equal(set.connectTimeoutMs, 300);
    const unset = newBroker(loadConfig(testEnv({ ...rmq, RMQ_CONNECT_TIMEOUT_MS: '' })), log);
    assert.ok(unset instanceof RabbitBroker);
    assert.equal(unset.connectTimeoutMs, 10_000);
    for (const bad of ['50', '10s']) {
      assert.throws(() => loadConfig(testEnv({ ...rmq, RMQ_CONNECT_TIMEOUT_MS: bad })), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.problems.join('\n'), /^RMQ_CONNECT_TIMEOUT_MS must be/m);
        return true;
      });
    }
  });
});

if (MODE === 'services') {
  describe('RabbitMQ refusing the user of RMQ_URL (services mode)', () => {
    // Until 2026-12-07 the warning said only "not reachable" with the broker's ACCESS_REFUSED.
    it('the retry warning carries a hint to check the user name and password in RMQ_URL', async () => {
      const lines: Record<string, unknown>[] = [];
      const capture = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
      const url = new URL(testEnv().RMQ_URL);
      url.username = 'nobody';
      url.password = 'wrong';
      const broker = new RabbitBroker(url.toString(), capture, 2000);
      try {
        await broker.start(50);
        await waitUntil('the retry warning', async () => lines.some((l) => l.msg === 'rabbitmq not reachable; retrying with backoff'), 10_000);
        const warning = lines.find((l) => l.msg === 'rabbitmq not reachable; retrying with backoff');
        assert.equal(warning?.hint, 'check the user name and password in RMQ_URL');
        assert.match(String(warning?.err), /ACCESS.REFUSED/);
      } finally {
        await broker.close();
      }
    });
  });
}
