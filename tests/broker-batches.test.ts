import assert from 'node:assert/strict';
import { MemoryBroker, RabbitBroker, RetryLater, type BatchHandler, type Broker } from '../messenger/infra/broker';
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

  it('batches are handled one at a time, in queue order, each at most the batch size, and all acknowledged', async () => {
    const seen: number[] = [];
    const sizes: number[] = [];
    let running = 0;
    let most = 0;
    const handler: BatchHandler = async (bodies) => {
      running++;
      most = Math.max(most, running);
      sizes.push(bodies.length);
      // Stay busy across a few turns of the event loop, so that later batches are cut while this one runs.
      for (let i = 0; i < 3; i++) await new Promise((r) => setTimeout(r, 5));
      for (const b of bodies) seen.push((JSON.parse(b.toString()) as { n: number }).n);
      running--;
      return { poison: [] };
    };
    await broker.consumeBatches(queue, handler, { size: 5, flushMs: 10 });
    const all = Array.from({ length: 40 }, (_, i) => i + 1);
    for (const n of all) await broker.publish(queue, { n });
    await waitUntil('every message is handled', async () => seen.length >= all.length, 10_000);
    assert.deepEqual(seen, all);
    assert.equal(most, 1, 'two batches ran at once');
    assert.ok(Math.max(...sizes) <= 5, `batch sizes ${sizes.join(',')}`);
    await broker.stopConsuming();
    if (MODE === 'services') assert.equal(await queueDepth(queue), 0, 'every batch was acknowledged');
  });

  it('a message after SYNC_FLUSH_MS of quiet is handled at once, alone; the ones that follow it within SYNC_FLUSH_MS wait for company', async () => {
    const batches: { ns: number[]; at: number }[] = [];
    const handler: BatchHandler = async (bodies) => {
      batches.push({ ns: bodies.map((b) => (JSON.parse(b.toString()) as { n: number }).n), at: Date.now() });
      return { poison: [] };
    };
    await broker.consumeBatches(queue, handler, { size: 100, flushMs: 600 });
    const sent = Date.now();
    await broker.publish(queue, { n: 7 });
    await waitUntil('the message is handled', async () => batches.length === 1, 5000);
    assert.deepEqual(batches[0].ns, [7]);
    assert.ok(batches[0].at - sent < 300, `handled ${batches[0].at - sent} ms after publishing: it waited for the flush timer`);
    const next = Date.now();
    await broker.publish(queue, { n: 8 });
    await broker.publish(queue, { n: 9 });
    await waitUntil('the next two are handled', async () => batches.length === 2, 5000);
    assert.deepEqual(batches[1].ns, [8, 9]);
    assert.ok(batches[1].at - next >= 500, `the second batch started ${batches[1].at - next} ms after its first message, before its flush time`);
    // Quiet again for longer than SYNC_FLUSH_MS: the next lone message does not wait either.
    await new Promise((r) => setTimeout(r, 700));
    const last = Date.now();
    await broker.publish(queue, { n: 10 });
    await waitUntil('the last one is handled', async () => batches.length === 3, 5000);
    assert.deepEqual(batches[2].ns, [10]);
    assert.ok(batches[2].at - last < 300, `handled ${batches[2].at - last} ms after publishing: it waited for the flush timer`);
    await broker.stopConsuming();
    if (MODE === 'services') assert.equal(await queueDepth(queue), 0, 'every batch was acknowledged');
  });

  /** A handler that records each batch (its numbers and start time) and holds the first one until `release`. */
  function heldFirst(): { handler: BatchHandler; batches: { ns: number[]; at: number }[]; release: () => void } {
    const batches: { ns: number[]; at: number }[] = [];
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const handler: BatchHandler = async (bodies) => {
      batches.push({ ns: bodies.map((b) => (JSON.parse(b.toString()) as { n: number }).n), at: Date.now() });
      if (batches.length === 1) await gate;
      return { poison: [] };
    };
    return { handler, batches, release: () => release() };
  }

  /** With the first batch still held and messages 2 and 3 delivered: releasing it starts [2, 3] at once, and all is acknowledged. */
  async function secondStartsOnRelease(batches: { ns: number[]; at: number }[], release: () => void): Promise<void> {
    assert.equal(batches.length, 1, 'nothing starts while a batch runs');
    const released = Date.now();
    release();
    await waitUntil('the second batch runs', async () => batches.length === 2, 5000);
    assert.deepEqual(batches[1].ns, [2, 3]);
    assert.ok(batches[1].at - released < 150, `the second batch started ${batches[1].at - released} ms after the first finished`);
    await broker.stopConsuming();
    if (MODE === 'services') assert.equal(await queueDepth(queue), 0, 'every batch was acknowledged');
  }

  it('a batch whose SYNC_FLUSH_MS ran out while another ran starts as soon as that one finishes, with all that came meanwhile', async () => {
    const { handler, batches, release } = heldFirst();
    await broker.consumeBatches(queue, handler, { size: 10, flushMs: 200 });
    await broker.publish(queue, { n: 1 });
    await waitUntil('the first batch runs', async () => batches.length === 1, 5000);
    await broker.publish(queue, { n: 2 });
    await new Promise((r) => setTimeout(r, 350)); // the second batch's flush time runs out while the first runs
    await broker.publish(queue, { n: 3 });
    await new Promise((r) => setTimeout(r, 50));
    await secondStartsOnRelease(batches, release);
  });

  it('a batch not yet due when the one before finishes still waits SYNC_FLUSH_MS from its first message', async () => {
    const { handler, batches, release } = heldFirst();
    await broker.consumeBatches(queue, handler, { size: 10, flushMs: 400 });
    await broker.publish(queue, { n: 1 });
    await waitUntil('the first batch runs', async () => batches.length === 1, 5000);
    const second = Date.now();
    await broker.publish(queue, { n: 2 });
    await new Promise((r) => setTimeout(r, 50));
    release();
    await waitUntil('the second batch runs', async () => batches.length === 2, 5000);
    assert.deepEqual(batches[1].ns, [2]);
    assert.ok(batches[1].at - second >= 350, `the second batch started ${batches[1].at - second} ms after its message, before its flush time`);
    await broker.stopConsuming();
  });

  it('a backlog beyond the batch size goes batch after batch; only RabbitMQ, whose prefetch holds back the rest, makes the tail wait', async () => {
    const batches: { ns: number[]; at: number }[] = [];
    const handler: BatchHandler = async (bodies) => {
      batches.push({ ns: bodies.map((b) => (JSON.parse(b.toString()) as { n: number }).n), at: Date.now() });
      return { poison: [] };
    };
    for (let n = 1; n <= 12; n++) await broker.publish(queue, { n });
    const started = Date.now();
    await broker.consumeBatches(queue, handler, { size: 5, flushMs: 800 });
    await waitUntil('all twelve are handled', async () => batches.reduce((k, b) => k + b.ns.length, 0) === 12, 5000);
    assert.deepEqual(batches.flatMap((b) => b.ns), Array.from({ length: 12 }, (_, i) => i + 1));
    assert.ok(batches.every((b) => b.ns.length <= 5), `batch sizes ${batches.map((b) => b.ns.length).join(',')}`);
    const last = batches[batches.length - 1].at - started;
    // In process the backlog is all there at once; RabbitMQ delivers the last two only after the second batch is acknowledged.
    if (MODE === 'embedded') assert.ok(last < 400, `the last batch started ${last} ms after consuming began`);
    else assert.ok(last >= 700, `the last batch started ${last} ms after consuming began, before its flush time`);
    await broker.stopConsuming();
  });

  it('a message whose handler asks for a later retry (RetryLater) is delivered again after that delay; stopping the consumers cuts a long delay short', async () => {
    const single = `${queue}.later`;
    await broker.declare(single);
    const deliveries: number[] = [];
    await broker.consume(
      single,
      async () => {
        deliveries.push(Date.now());
        if (deliveries.length === 1) throw new RetryLater(700, new Error('backing service away'));
        if (deliveries.length === 2) throw new RetryLater(60_000, new Error('still away'));
      },
      1,
    );
    await broker.publish(single, { n: 1 });
    await waitUntil('the second delivery', async () => deliveries.length >= 2, 10_000);
    assert.ok(deliveries[1] - deliveries[0] >= 650, `delivered again after ${deliveries[1] - deliveries[0]} ms, asked for 700`);
    // The second delivery waits 60 s before going back: stopping does not wait for that.
    await new Promise((r) => setTimeout(r, 100));
    const stopping = Date.now();
    await broker.stopConsuming();
    assert.ok(Date.now() - stopping < 2000, `stopping took ${Date.now() - stopping} ms`);
    if (MODE === 'services') await deleteQueues(single);
  });

  it('a batch whose handler fails is tried again after a pause, and nothing is lost or handled twice', async () => {
    const tries: { ns: number[]; at: number; ok: boolean }[] = [];
    const handler: BatchHandler = async (bodies) => {
      const ok = tries.length > 0;
      tries.push({ ns: bodies.map((b) => (JSON.parse(b.toString()) as { n: number }).n), at: Date.now(), ok });
      if (!ok) throw new Error('database away');
      return { poison: [] };
    };
    await broker.consumeBatches(queue, handler, { size: 10, flushMs: 200 });
    for (const n of [1, 2, 3]) await broker.publish(queue, { n });
    const handled = () => tries.filter((t) => t.ok).flatMap((t) => t.ns);
    await waitUntil('all three are handled', async () => handled().length >= 3, 5000);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual([...handled()].sort(), [1, 2, 3], 'each message handled once');
    // Which messages the first batch held depends on delivery timing (the first came after quiet); each is tried again after the pause.
    const failed = tries[0];
    for (const n of failed.ns) {
      const again = tries.find((t) => t.ok && t.ns.includes(n));
      assert.ok(again !== undefined && again.at - failed.at >= 400, `message ${n} tried again ${again === undefined ? 'never' : `${again.at - failed.at} ms`} after its batch failed`);
    }
    await broker.stopConsuming();
    if (MODE === 'services') assert.equal(await queueDepth(queue), 0, 'the second try was acknowledged');
  });

  it('with SYNC_FLUSH_MS 0 batches run back to back: a lone message at once, what came during a batch right after it', async () => {
    const { handler, batches, release } = heldFirst();
    await broker.consumeBatches(queue, handler, { size: 10, flushMs: 0 });
    const sent = Date.now();
    await broker.publish(queue, { n: 1 });
    await waitUntil('the first batch runs', async () => batches.length === 1, 5000);
    assert.ok(batches[0].at - sent < 150, `a lone message started ${batches[0].at - sent} ms after publishing`);
    await broker.publish(queue, { n: 2 });
    await broker.publish(queue, { n: 3 });
    await new Promise((r) => setTimeout(r, 150));
    await secondStartsOnRelease(batches, release);
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
