import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import type { Config } from '../config';
import { BackendUnavailable } from './errors';
import type { Logger } from './logger';

/** Thrown by a handler for a message that can never succeed: it is dead-lettered at once. */
export class PoisonMessage extends Error {}

/**
 * Thrown by a handler for a message that could not run for a reason outside
 * it (a backing service away) and that the handler has logged itself: the
 * message is put back after `delayMs` instead of the usual pause, without
 * another warning.
 */
export class RetryLater extends Error {
  constructor(
    readonly delayMs: number,
    cause: unknown,
  ) {
    super(cause instanceof Error ? cause.message : String(cause), { cause });
  }
}

/**
 * Runs one message. Resolving acknowledges it; throwing PoisonMessage
 * dead-letters it; any other error puts it back for another try after a pause
 * (RetryLater: a pause of the handler's choosing; the handler itself bounds
 * the number of attempts).
 */
export type MessageHandler = (body: Buffer) => Promise<void>;

/**
 * Runs a batch of messages. It resolves with the indexes of the messages that
 * can never succeed (dead-lettered); the rest are acknowledged together.
 * Throwing puts the whole batch back for another try after a pause.
 */
export type BatchHandler = (bodies: Buffer[]) => Promise<{ poison: number[] }>;

/** How a batch consumer gathers: at most `size` messages, or whatever came within `flushMs` of the first. */
export interface BatchOptions {
  size: number;
  flushMs: number;
}

/**
 * Named durable queues, each with a dead-letter queue `<name>.dead` beside it:
 * RabbitMQ in the services mode, in-process queues in the embedded mode.
 */
export interface Broker {
  readonly kind: 'rabbitmq' | 'memory';
  /** Starts connecting (retrying with backoff for as long as it takes); resolves when connected or after `waitMs`, whichever is first. */
  start(waitMs: number): Promise<void>;
  /** Declares `queue` (and its dead-letter queue) now and after every reconnect, so messages can wait in it before any consumer exists. */
  declare(queue: string): Promise<void>;
  /** Resolves once the broker has durably accepted the message; rejects with BackendUnavailable otherwise. */
  publish(queue: string, body: object): Promise<void>;
  /** Hands `queue`'s messages to `handler`, at most `prefetch` at a time, across reconnects. */
  consume(queue: string, handler: MessageHandler, prefetch: number): Promise<void>;
  /** Hands `queue`'s messages to `handler` in batches, one batch at a time, across reconnects. */
  consumeBatches(queue: string, handler: BatchHandler, opts: BatchOptions): Promise<void>;
  /** Resolves true once this process actually consumes from `queue` (the broker reachable), false when the broker closes first. */
  attached(queue: string): Promise<boolean>;
  /** Stops taking new messages and waits for the ones in hand to finish. */
  stopConsuming(): Promise<void>;
  /** Consumers currently attached to `queue` (any process), or undefined when that cannot be told. */
  consumerCount(queue: string): Promise<number | undefined>;
  /** True while the broker connection is up (always for the in-process broker). */
  isConnected(): boolean;
  close(): Promise<void>;
}

const RETRY_PAUSE_MS = 500;
/** How often a broker that stays unreachable is logged again. */
const WARN_EVERY_MS = 30_000;
/**
 * How long a publish waits for the broker's confirm. A broker that keeps the
 * connection but stops answering would otherwise hold the request forever;
 * past this the publish fails (503) like an unreachable broker.
 */
const CONFIRM_TIMEOUT_MS = 5000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * What to do about a broker that refuses the connection as set up, when its
 * answer says (retrying cannot help until RMQ_URL or the broker's users change).
 */
export function brokerFailureHint(err: unknown): string | undefined {
  const text = reason(err);
  if (/ACCESS[-_]REFUSED/.test(text) && /Login was refused|authentication/i.test(text)) {
    return 'check the user name and password in RMQ_URL';
  }
  if (/NOT[-_]ALLOWED|vhost/i.test(text)) return 'check the virtual host in RMQ_URL (it must exist and the user may use it)';
  return undefined;
}

/**
 * The pauses before a failed message is put back: RETRY_PAUSE_MS, or a
 * RetryLater's own delay. `wakeAll` ends every pause at once, so a message
 * waiting out a long delay does not hold up stopping the consumers.
 */
class RetryPauses {
  private readonly waking = new Set<() => void>();
  /** Set by `wakeAll` until consumers are added again: a pause then ends at once. */
  private hurry = false;

  constructor(private readonly log: Logger) {}

  /** Logs the failure (a RetryLater was logged by its handler) and waits before the retry. */
  async before(err: unknown, count: number): Promise<void> {
    if (err instanceof RetryLater) {
      this.log.debug({ err: err.message, count, retryInMs: err.delayMs }, 'handler asked for a later retry');
    } else {
      this.log.warn({ err: reason(err), count }, 'handler failed; will be retried');
    }
    const ms = this.hurry ? 0 : err instanceof RetryLater ? err.delayMs : RETRY_PAUSE_MS;
    await new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.waking.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.waking.add(wake);
    });
  }

  /** Ends every pause now, and any that starts until `resume`. */
  wakeAll(): void {
    this.hurry = true;
    for (const wake of [...this.waking]) wake();
  }

  resume(): void {
    this.hurry = false;
  }
}

/**
 * Gathers items into batches and runs them one at a time (both brokers'
 * batch consumers). A batch is due when it reaches `size` or when `flushMs`
 * has passed since its first item; a due batch starts at once, or as soon as
 * the one in progress finishes, and takes everything that came meanwhile (up
 * to `size`; what is left beyond that waited with it and goes right after).
 * An item that comes after `flushMs` of quiet (no item arrived in that time)
 * does not wait for company: traffic that sparse sends nothing to wait for,
 * so it is due on the next turn of the event loop (with whatever arrived in
 * the same read). Under steady traffic items come closer together than
 * `flushMs` and the timer forms the batches as before.
 * With `flushMs` 0 every item is due at once: batches run back to back and
 * form from what arrives while the one before runs (group commit).
 */
class Batcher<T> {
  private pending: T[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private due = false;
  private stopped = false;
  /** When the last item arrived (ms since the epoch). */
  private lastArrival = -Infinity;

  constructor(
    private readonly opts: BatchOptions,
    private readonly run: (batch: T[]) => Promise<void>,
    private readonly track: (p: Promise<void>) => void,
  ) {}

  push(item: T): void {
    const now = Date.now();
    const quiet = now - this.lastArrival >= this.opts.flushMs;
    this.lastArrival = now;
    this.pending.push(item);
    if (this.pending.length >= this.opts.size) this.next();
    else this.timer ??= setTimeout(() => this.next(), quiet ? 0 : this.opts.flushMs);
  }

  /** Puts a failed batch back in front, to be tried with the next one. */
  requeue(items: T[]): void {
    this.pending.unshift(...items);
  }

  /** Starts no more batches; the one in progress finishes. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** What never ran (after `stop` and the batch in progress). */
  drain(): T[] {
    return this.pending.splice(0);
  }

  private next(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stopped || this.pending.length === 0) return;
    if (this.running) {
      this.due = true;
      return;
    }
    const batch = this.pending.splice(0, this.opts.size);
    this.due = this.pending.length > 0;
    this.running = true;
    this.track(
      this.run(batch).finally(() => {
        this.running = false;
        if (this.due || this.pending.length >= this.opts.size) this.next();
        else if (this.pending.length > 0) this.timer ??= setTimeout(() => this.next(), this.opts.flushMs);
      }),
    );
  }
}

type Consumer =
  | { queue: string; kind: 'single'; handler: MessageHandler; prefetch: number }
  | { queue: string; kind: 'batch'; handler: BatchHandler; opts: BatchOptions };

/** Default bound of one silent RabbitMQ connect attempt before it is retried with backoff. */
export const CONNECT_TIMEOUT_MS = 10_000;

/**
 * RabbitMQ: durable queues with dead-letter queues, persistent messages,
 * publisher confirms, manual acknowledgement after the handler resolves. The
 * connection is re-made with capped exponential backoff; while it is down,
 * publishing fails at once (the caller answers 503).
 */
export class RabbitBroker implements Broker {
  readonly kind = 'rabbitmq' as const;
  private conn: ChannelModel | undefined;
  private pub: ConfirmChannel | undefined;
  private readonly declared = new Set<string>();
  private readonly known = new Set<string>();
  private readonly consumers: Consumer[] = [];
  private subs: { channel: Channel; tag: string }[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly pauses: RetryPauses;
  private closing = false;
  private connecting: Promise<void> | undefined;
  /** Per queue: settles `attached` once a consumer is subscribed (true) or the broker closes (false). */
  private readonly attachedTo = new Map<string, { done: Promise<boolean>; settle: (ok: boolean) => void }>();

  constructor(
    private readonly url: string,
    private readonly log: Logger,
    /**
     * Bound of one connect attempt while the broker sends nothing (amqplib's
     * socket `timeout`, lifted once the connection is open): a broker that
     * accepts TCP but never answers would otherwise hang the attempt, and
     * with it start-up and reconnection, forever.
     */
    readonly connectTimeoutMs = CONNECT_TIMEOUT_MS,
  ) {
    this.pauses = new RetryPauses(log);
  }

  /** Starts connecting in the background; resolves when connected or after `waitMs`, whichever is first. */
  async start(waitMs: number): Promise<void> {
    const connected = this.ensureConnecting();
    await Promise.race([connected, sleep(waitMs)]);
    if (this.conn === undefined && !this.closing) {
      this.log.warn('rabbitmq not reachable yet; publishing answers 503 and consumers wait until it is');
    }
  }

  private ensureConnecting(): Promise<void> {
    this.connecting ??= this.connectLoop().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /**
   * Connects, retrying with capped exponential backoff (0.2 s doubling to
   * 5 s). The failure is logged at once and then every WARN_EVERY_MS while
   * it lasts (each warning says how long it has lasted and when the next try
   * is), so the log shows a broker that is still away without a line per try.
   */
  private async connectLoop(): Promise<void> {
    const since = Date.now();
    let warned = -Infinity;
    for (let attempt = 0; !this.closing; attempt++) {
      try {
        await this.connect();
        if (attempt > 0) this.log.info({ attempts: attempt + 1, downMs: Date.now() - since }, 'rabbitmq connection restored');
        return;
      } catch (err) {
        if (this.closing) return; // the connection was cut by our own close
        const delay = Math.min(200 * 2 ** Math.min(attempt, 5), 5000);
        if (Date.now() - warned >= WARN_EVERY_MS) {
          warned = Date.now();
          const hint = brokerFailureHint(err);
          this.log.warn(
            { err: reason(err), ...(hint === undefined ? {} : { hint }), attempt: attempt + 1, downMs: warned - since, retryInMs: delay },
            'rabbitmq not reachable; retrying with backoff',
          );
        }
        await sleep(delay);
      }
    }
  }

  private async connect(): Promise<void> {
    // noDelay: a message larger than a few kilobytes goes out in more than one
    // TCP segment, and with Nagle's algorithm on, the last one waits for the
    // broker's delayed ACK: 40 ms more per confirmed publish (measured: 44 ms
    // median for 5,000-byte messages published one at a time, 0.8 ms with
    // noDelay; docs/performance.md, "Nagle and the broker").
    const conn = await amqp.connect(this.url, { noDelay: true, timeout: this.connectTimeoutMs });
    conn.on('error', (err: Error) => this.log.warn({ err: err.message }, 'rabbitmq connection error'));
    conn.on('close', () => {
      this.conn = undefined;
      this.pub = undefined;
      this.subs = [];
      this.declared.clear();
      if (!this.closing) {
        this.log.warn('rabbitmq connection closed; reconnecting');
        void this.ensureConnecting();
      }
    });
    try {
      const pub = await conn.createConfirmChannel();
      pub.on('error', () => {});
      for (const q of this.known) await this.declareOn(pub, q);
      // Closed while this connection was being set up: nobody would close it.
      if (this.closing) throw new Error('broker closed');
      this.conn = conn;
      this.pub = pub;
      for (const c of this.consumers) await this.subscribe(conn, c);
      for (const c of this.consumers) this.attachment(c.queue).settle(true);
    } catch (err) {
      this.conn = undefined;
      this.pub = undefined;
      await conn.close().catch(() => {});
      throw err;
    }
  }

  async declare(queue: string): Promise<void> {
    this.known.add(queue);
    const conn = this.conn;
    if (this.pub === undefined) return;
    try {
      await this.declareOn(this.pub, queue);
    } catch (err) {
      // The connection went (or we are closing): the queue is declared again on the next connection.
      if (!this.lost(conn)) throw err;
    }
  }

  /** True when `conn` is no longer the live connection, or the broker is closing. */
  private lost(conn: ChannelModel | undefined): boolean {
    return this.closing || conn === undefined || this.conn !== conn;
  }

  private attachment(queue: string): { done: Promise<boolean>; settle: (ok: boolean) => void } {
    let a = this.attachedTo.get(queue);
    if (a === undefined) {
      let settle!: (ok: boolean) => void;
      const done = new Promise<boolean>((resolve) => (settle = resolve));
      a = { done, settle };
      this.attachedTo.set(queue, a);
    }
    return a;
  }

  attached(queue: string): Promise<boolean> {
    return this.closing ? Promise.resolve(false) : this.attachment(queue).done;
  }

  /** Declares `queue` and its dead-letter queue once per connection. */
  private async declareOn(channel: Channel, queue: string): Promise<void> {
    if (this.declared.has(queue)) return;
    await channel.assertQueue(`${queue}.dead`, { durable: true });
    await channel.assertQueue(queue, {
      durable: true,
      arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${queue}.dead` },
    });
    this.declared.add(queue);
  }

  private async subscribe(conn: ChannelModel, consumer: Consumer): Promise<void> {
    const channel = await conn.createChannel();
    channel.on('error', () => {});
    await this.declareOn(channel, consumer.queue);
    const prefetch = consumer.kind === 'single' ? consumer.prefetch : consumer.opts.size;
    await channel.prefetch(prefetch);
    const onMessage = consumer.kind === 'single' ? this.single(channel, consumer.handler) : this.batcher(channel, consumer.handler, consumer.opts);
    const { consumerTag } = await channel.consume(consumer.queue, (msg) => {
      if (msg !== null) onMessage(msg); // null: cancelled by the broker; the close handler reconnects
    });
    this.subs.push({ channel, tag: consumerTag });
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private single(channel: Channel, handler: MessageHandler): (msg: ConsumeMessage) => void {
    return (msg) =>
      this.track(
        (async () => {
          try {
            await handler(msg.content);
            channel.ack(msg);
          } catch (err) {
            await this.settleFailure(channel, [msg], err);
          }
        })(),
      );
  }

  /** Deliveries into batches (Batcher), each run and then settled on `channel`. */
  private batcher(channel: Channel, handler: BatchHandler, opts: BatchOptions): (msg: ConsumeMessage) => void {
    const batches = new Batcher<ConsumeMessage>(opts, (batch) => this.runBatch(channel, handler, batch), (p) => this.track(p));
    return (msg) => batches.push(msg);
  }

  private async runBatch(channel: Channel, handler: BatchHandler, batch: ConsumeMessage[]): Promise<void> {
    try {
      const { poison } = await handler(batch.map((m) => m.content));
      const bad = new Set(poison);
      if (bad.size === 0) {
        // One frame acknowledges the whole batch: every earlier delivery on this channel is settled already.
        channel.ack(batch[batch.length - 1], true);
        return;
      }
      batch.forEach((m, i) => (bad.has(i) ? channel.nack(m, false, false) : channel.ack(m)));
      this.log.error({ count: bad.size }, 'poison messages dead-lettered');
    } catch (err) {
      await this.settleFailure(channel, batch, err);
    }
  }

  private async settleFailure(channel: Channel, msgs: ConsumeMessage[], err: unknown): Promise<void> {
    try {
      if (err instanceof PoisonMessage) {
        this.log.error({ err: err.message }, 'poison message dead-lettered');
        for (const m of msgs) channel.nack(m, false, false);
      } else {
        await this.pauses.before(err, msgs.length);
        for (const m of msgs) channel.nack(m, false, true);
      }
    } catch {
      // The channel closed under us: the broker redelivers the messages anyway.
    }
  }

  async publish(queue: string, body: object): Promise<void> {
    const pub = this.pub;
    if (pub === undefined) {
      void this.ensureConnecting();
      throw new BackendUnavailable('rabbitmq', 'not connected');
    }
    const content = Buffer.from(JSON.stringify(body));
    try {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${CONFIRM_TIMEOUT_MS} ms`)), CONFIRM_TIMEOUT_MS);
      });
      const confirmed = (async () => {
        await this.declareOn(pub, queue);
        await new Promise<void>((resolve, reject) => {
          pub.sendToQueue(queue, content, { persistent: true, contentType: 'application/json' }, (err) =>
            err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(),
          );
        });
      })();
      // A late failure of the abandoned attempt has no one to tell.
      confirmed.catch(() => undefined);
      try {
        await Promise.race([confirmed, late]);
      } finally {
        clearTimeout(timer);
      }
    } catch (err) {
      this.log.warn({ err: reason(err), queue }, 'publish not confirmed');
      throw new BackendUnavailable('rabbitmq', 'publish not confirmed');
    }
  }

  private async addConsumer(consumer: Consumer): Promise<void> {
    this.pauses.resume();
    this.consumers.push(consumer);
    const conn = this.conn;
    if (conn === undefined) {
      void this.ensureConnecting();
      return;
    }
    try {
      await this.subscribe(conn, consumer);
      this.attachment(consumer.queue).settle(true);
    } catch (err) {
      // The connection went (or we are closing): the next connection subscribes every consumer.
      if (!this.lost(conn)) throw err;
    }
  }

  consume(queue: string, handler: MessageHandler, prefetch: number): Promise<void> {
    return this.addConsumer({ queue, kind: 'single', handler, prefetch });
  }

  consumeBatches(queue: string, handler: BatchHandler, opts: BatchOptions): Promise<void> {
    return this.addConsumer({ queue, kind: 'batch', handler, opts });
  }

  async stopConsuming(): Promise<void> {
    this.consumers.length = 0;
    const subs = this.subs;
    this.subs = [];
    await Promise.all(subs.map((s) => s.channel.cancel(s.tag).catch(() => {})));
    this.pauses.wakeAll();
    // A due batch that starts when the one in progress finishes is tracked only then: wait until none is left running.
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    await Promise.all(subs.map((s) => s.channel.close().catch(() => {})));
  }

  async consumerCount(queue: string): Promise<number | undefined> {
    const pub = this.pub;
    if (pub === undefined) return undefined;
    try {
      await this.declareOn(pub, queue);
      return (await pub.checkQueue(queue)).consumerCount;
    } catch {
      return undefined;
    }
  }

  isConnected(): boolean {
    return this.conn !== undefined;
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const a of this.attachedTo.values()) a.settle(false);
    await this.stopConsuming();
    const conn = this.conn;
    this.conn = undefined;
    this.pub = undefined;
    if (conn !== undefined) await conn.close().catch(() => {});
  }
}

interface MemoryQueue {
  pending: Buffer[];
  consumer?: Consumer;
  running: number;
  /** Set while a batch consumer is attached: it holds the queue's messages. */
  batches?: Batcher<Buffer>;
}

/**
 * The embedded mode's broker: messages wait in memory and consumers run in
 * the same process. Same contract, minus durability across restarts.
 */
export class MemoryBroker implements Broker {
  readonly kind = 'memory' as const;
  private readonly queues = new Map<string, MemoryQueue>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly pauses: RetryPauses;

  constructor(private readonly log: Logger) {
    this.pauses = new RetryPauses(log);
  }

  async start(): Promise<void> {}

  async attached(): Promise<boolean> {
    return true;
  }

  private queue(name: string): MemoryQueue {
    let q = this.queues.get(name);
    if (q === undefined) {
      q = { pending: [], running: 0 };
      this.queues.set(name, q);
    }
    return q;
  }

  async declare(queue: string): Promise<void> {
    this.queue(queue);
  }

  async publish(queue: string, body: object): Promise<void> {
    const q = this.queue(queue);
    const content = Buffer.from(JSON.stringify(body));
    if (q.batches !== undefined) q.batches.push(content);
    else {
      q.pending.push(content);
      this.pump(queue);
    }
  }

  async consume(queue: string, handler: MessageHandler, prefetch: number): Promise<void> {
    this.pauses.resume();
    this.queue(queue).consumer = { queue, kind: 'single', handler, prefetch };
    this.pump(queue);
  }

  async consumeBatches(queue: string, handler: BatchHandler, opts: BatchOptions): Promise<void> {
    this.pauses.resume();
    const q = this.queue(queue);
    q.consumer = { queue, kind: 'batch', handler, opts };
    const batches: Batcher<Buffer> = new Batcher<Buffer>(opts, (bodies) => this.runBatch(batches, handler, bodies), (p) => this.track(p));
    q.batches = batches;
    for (const body of q.pending.splice(0)) batches.push(body);
  }

  /** Single-message consumers: runs what is pending, up to `prefetch` at once. */
  private pump(name: string): void {
    const q = this.queue(name);
    const c = q.consumer;
    if (c?.kind !== 'single') return;
    while (q.running < c.prefetch && q.pending.length > 0) this.runOne(q, name, c.handler, q.pending.shift() as Buffer);
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  private runOne(q: MemoryQueue, name: string, handler: MessageHandler, body: Buffer): void {
    q.running++;
    this.track(
      (async () => {
        try {
          await handler(body);
        } catch (err) {
          if (await this.dropOrPause(err)) q.pending.unshift(body);
        }
      })().finally(() => {
        q.running--;
        this.pump(name);
      }),
    );
  }

  private async runBatch(batches: Batcher<Buffer>, handler: BatchHandler, bodies: Buffer[]): Promise<void> {
    try {
      const { poison } = await handler(bodies);
      if (poison.length > 0) this.log.error({ count: poison.length }, 'poison messages dropped');
    } catch (err) {
      if (await this.dropOrPause(err)) batches.requeue(bodies);
    }
  }

  /** A failed handler: false for a poison message (dropped); else true after a pause, to be tried again. */
  private async dropOrPause(err: unknown): Promise<boolean> {
    if (err instanceof PoisonMessage) {
      this.log.error({ err: err.message }, 'poison message dropped');
      return false;
    }
    await this.pauses.before(err, 1);
    return true;
  }

  async stopConsuming(): Promise<void> {
    const stopped: { q: MemoryQueue; batches: Batcher<Buffer> }[] = [];
    for (const q of this.queues.values()) {
      q.consumer = undefined;
      if (q.batches !== undefined) {
        q.batches.stop();
        stopped.push({ q, batches: q.batches });
        q.batches = undefined;
      }
    }
    this.pauses.wakeAll();
    await Promise.allSettled([...this.inFlight]);
    // What the batch consumers never ran waits for the next consumer, ahead of what was published since.
    for (const { q, batches } of stopped) q.pending.unshift(...batches.drain());
  }

  async consumerCount(queue: string): Promise<number | undefined> {
    return this.queues.get(queue)?.consumer === undefined ? 0 : 1;
  }

  isConnected(): boolean {
    return true;
  }

  async close(): Promise<void> {
    await this.stopConsuming();
    this.queues.clear();
  }
}

/** RabbitMQ when RMQ_URL is set, else the in-process broker; not started (see `Broker.start`). */
export function newBroker(config: Config, log: Logger): Broker {
  return config.rmqUrl === undefined ? new MemoryBroker(log) : new RabbitBroker(config.rmqUrl, log, config.rmqConnectTimeoutMs);
}

/** A started broker (connected, or still trying after 5 s). */
export async function createBroker(config: Config, log: Logger): Promise<Broker> {
  const broker = newBroker(config, log);
  await broker.start(BROKER_START_WAIT_MS);
  return broker;
}

/** How long start-up waits for RabbitMQ before going on without it (connecting goes on in the background). */
export const BROKER_START_WAIT_MS = 5000;
