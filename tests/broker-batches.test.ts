import assert from 'node:assert/strict';
import { MemoryBroker, RabbitBroker, type BatchHandler, type Broker } from '../messenger/infra/broker';
import { createLogger } from '../messenger/infra/logger';
import { MODE, RUN_ID, deleteQueues } from './helpers/env';
import { waitUntil } from './helpers/wait';

const log = createLogger('silent');
const RMQ_URL = process.env.TEST_RMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

/** The broker of the mode under test: RabbitMQ in the services mode, in-process otherwise. */
async function brokerOfMode(): Promise<Broker> {
  if (MODE === 'embedded') return new MemoryBroker(log);
  const b = new RabbitBroker(RMQ_URL, log);
  await b.start(5000);
  assert.ok(b.isConnected(), 'RabbitMQ is reachable');
  return b;
}

describe(`broker batches (${MODE === 'services' ? 'RabbitMQ' : 'in-process'})`, function () {
  const queue = `test.${RUN_ID}.batches`;
  let broker: Broker;

  beforeEach(async () => {
    broker = await brokerOfMode();
    await broker.declare(queue);
  });

  afterEach(async () => {
    await broker.close();
    if (MODE === 'services') await deleteQueues(queue);
  });

  it('what arrives while a batch is handled is the next batch as soon as that one ends, without waiting for SYNC_FLUSH_MS', async () => {
    const batches: { ns: number[]; at: number }[] = [];
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const handler: BatchHandler = async (bodies) => {
      batches.push({ ns: bodies.map((b) => (JSON.parse(b.toString()) as { n: number }).n), at: Date.now() });
      if (batches.length === 1) await gate;
      return { poison: [] };
    };
    // The first batch is cut by the timer (the size is never reached here; with RabbitMQ the prefetch is the size).
    const flushMs = 2000;
    await broker.consumeBatches(queue, handler, { size: 10, flushMs });
    await broker.publish(queue, { n: 1 });
    await waitUntil('the first batch is handled', async () => batches.length === 1, 10_000);
    await broker.publish(queue, { n: 2 });
    await broker.publish(queue, { n: 3 });
    // RabbitMQ: both delivered to the consumer (none left ready in the queue) while the first batch still runs.
    if (MODE === 'services') await waitUntil('messages 2 and 3 are in the consumer', async () => (await queueDepth(queue)) === 0);
    const published = Date.now();
    assert.equal(batches.length, 1, 'nothing else is handled while the first batch runs');
    release();
    const released = Date.now();
    await waitUntil('the second batch is handled', async () => batches.length === 2, 10_000);
    assert.deepEqual(batches.map((b) => b.ns), [[1], [2, 3]]);
    // Cut when the first ended, not by a timer started when message 2 came (that one fires about flushMs after `published`).
    assert.ok(batches[1].at - released < flushMs / 2, `second batch ${batches[1].at - released} ms after the first ended, ${batches[1].at - published} ms after messages 2 and 3 came`);
    await broker.stopConsuming();
    if (MODE === 'services') assert.equal(await queueDepth(queue), 0, 'both batches were acknowledged');
  });

  it('a lone message under no load waits SYNC_FLUSH_MS for company, then is handled alone', async () => {
    const seen: { n: number; at: number }[] = [];
    const handler: BatchHandler = async (bodies) => {
      for (const b of bodies) seen.push({ n: (JSON.parse(b.toString()) as { n: number }).n, at: Date.now() });
      return { poison: [] };
    };
    await broker.consumeBatches(queue, handler, { size: 100, flushMs: 300 });
    const sent = Date.now();
    await broker.publish(queue, { n: 7 });
    await waitUntil('the message is handled', async () => seen.length === 1, 5000);
    assert.equal(seen[0].n, 7);
    assert.ok(seen[0].at - sent >= 250, `handled ${seen[0].at - sent} ms after publishing, before the flush timer`);
  });
});

/** Ready messages in `queue` (not delivered to any consumer yet). */
async function queueDepth(queue: string): Promise<number> {
  const amqp = await import('amqplib');
  const conn = await amqp.connect(RMQ_URL);
  try {
    return (await (await conn.createChannel()).checkQueue(queue)).messageCount;
  } finally {
    await conn.close();
  }
}
