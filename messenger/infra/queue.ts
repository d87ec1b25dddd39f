import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import type { Config } from '../config';
import { ServiceUnavailable } from '../errors';
import type { Logger } from './logger';

/** Thrown by a task handler for a message that can never succeed: it is dead-lettered at once. */
export class PoisonMessage extends Error {}

/**
 * Runs one message. Resolving acknowledges it; throwing PoisonMessage
 * dead-letters it; any other error puts it back for another try after a pause
 * (the handler itself bounds the number of attempts).
 */
export type TaskHandler = (body: Buffer) => Promise<void>;

/** The search task queue: RabbitMQ in the services mode, an in-process queue in the embedded mode. */
export interface TaskQueue {
  readonly kind: 'rabbitmq' | 'memory';
  /** Resolves once the broker has durably accepted the message; rejects with ServiceUnavailable otherwise. */
  publish(body: object): Promise<void>;
  /** Starts handing messages to `handler`, at most `prefetch` at a time; keeps doing so across reconnects. */
  consume(handler: TaskHandler, prefetch: number): Promise<void>;
  /** Stops taking new messages and waits for the ones in hand to finish. */
  stopConsuming(): Promise<void>;
  /** True while the broker connection is up (always for the in-process queue). */
  isConnected(): boolean;
  close(): Promise<void>;
}

const RETRY_PAUSE_MS = 500;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * RabbitMQ: a durable queue with a dead-letter queue beside it, persistent
 * messages, publisher confirms, manual acknowledgement after the handler
 * resolves. The connection is re-made with capped exponential backoff; while
 * it is down, publishing fails at once (the caller answers 503).
 */
export class RabbitQueue implements TaskQueue {
  readonly kind = 'rabbitmq' as const;
  private conn: ChannelModel | undefined;
  private pub: ConfirmChannel | undefined;
  private sub: { channel: Channel; tag: string } | undefined;
  private consumer: { handler: TaskHandler; prefetch: number } | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private closing = false;
  private connecting: Promise<void> | undefined;

  constructor(
    private readonly url: string,
    private readonly queue: string,
    private readonly log: Logger,
  ) {}

  /** Starts connecting in the background; resolves when connected or after `waitMs`, whichever is first. */
  async start(waitMs: number): Promise<void> {
    const connected = this.ensureConnecting();
    await Promise.race([connected, sleep(waitMs)]);
    if (this.conn === undefined) this.log.warn('rabbitmq not reachable yet; search requests answer 503 until it is');
  }

  private ensureConnecting(): Promise<void> {
    this.connecting ??= this.connectLoop().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async connectLoop(): Promise<void> {
    for (let attempt = 0; !this.closing; attempt++) {
      try {
        await this.connect();
        if (attempt > 0) this.log.info('rabbitmq connection restored');
        return;
      } catch (err) {
        const delay = Math.min(200 * 2 ** Math.min(attempt, 5), 5000);
        if (attempt === 0) this.log.warn({ err: err instanceof Error ? err.message : err }, 'rabbitmq connect failed; retrying');
        await sleep(delay);
      }
    }
  }

  private async connect(): Promise<void> {
    const conn = await amqp.connect(this.url);
    conn.on('error', (err: Error) => this.log.warn({ err: err.message }, 'rabbitmq connection error'));
    conn.on('close', () => {
      this.conn = undefined;
      this.pub = undefined;
      this.sub = undefined;
      if (!this.closing) {
        this.log.warn('rabbitmq connection closed; reconnecting');
        void this.ensureConnecting();
      }
    });
    try {
      const pub = await conn.createConfirmChannel();
      pub.on('error', () => {});
      await pub.assertQueue(`${this.queue}.dead`, { durable: true });
      await pub.assertQueue(this.queue, {
        durable: true,
        arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${this.queue}.dead` },
      });
      this.conn = conn;
      this.pub = pub;
      if (this.consumer !== undefined) await this.subscribe(conn, this.consumer);
    } catch (err) {
      await conn.close().catch(() => {});
      throw err;
    }
  }

  private async subscribe(conn: ChannelModel, consumer: { handler: TaskHandler; prefetch: number }): Promise<void> {
    const channel = await conn.createChannel();
    channel.on('error', () => {});
    await channel.prefetch(consumer.prefetch);
    const { consumerTag } = await channel.consume(this.queue, (msg) => {
      if (msg === null) return; // cancelled by the broker; the close handler reconnects
      const p = this.handle(channel, msg, consumer.handler);
      this.inFlight.add(p);
      void p.finally(() => this.inFlight.delete(p));
    });
    this.sub = { channel, tag: consumerTag };
  }

  private async handle(channel: Channel, msg: ConsumeMessage, handler: TaskHandler): Promise<void> {
    try {
      await handler(msg.content);
      channel.ack(msg);
    } catch (err) {
      try {
        if (err instanceof PoisonMessage) {
          this.log.error({ err: err.message }, 'poison message dead-lettered');
          channel.nack(msg, false, false);
        } else {
          this.log.warn({ err: err instanceof Error ? err.message : err }, 'task failed; will be retried');
          await sleep(RETRY_PAUSE_MS);
          channel.nack(msg, false, true);
        }
      } catch {
        // The channel closed under us: the broker redelivers the message anyway.
      }
    }
  }

  async publish(body: object): Promise<void> {
    const pub = this.pub;
    if (pub === undefined) {
      void this.ensureConnecting();
      throw new ServiceUnavailable();
    }
    const content = Buffer.from(JSON.stringify(body));
    try {
      await new Promise<void>((resolve, reject) => {
        pub.sendToQueue(this.queue, content, { persistent: true, contentType: 'application/json' }, (err) =>
          err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(),
        );
      });
    } catch (err) {
      this.log.warn({ err: err instanceof Error ? err.message : err }, 'publish not confirmed');
      throw new ServiceUnavailable();
    }
  }

  async consume(handler: TaskHandler, prefetch: number): Promise<void> {
    this.consumer = { handler, prefetch };
    if (this.conn !== undefined && this.sub === undefined) await this.subscribe(this.conn, this.consumer);
    else void this.ensureConnecting();
  }

  async stopConsuming(): Promise<void> {
    this.consumer = undefined;
    const sub = this.sub;
    this.sub = undefined;
    if (sub !== undefined) await sub.channel.cancel(sub.tag).catch(() => {});
    await Promise.allSettled([...this.inFlight]);
    if (sub !== undefined) await sub.channel.close().catch(() => {});
  }

  isConnected(): boolean {
    return this.conn !== undefined;
  }

  async close(): Promise<void> {
    await this.stopConsuming();
    this.closing = true;
    const conn = this.conn;
    this.conn = undefined;
    this.pub = undefined;
    if (conn !== undefined) await conn.close().catch(() => {});
  }
}

/**
 * The embedded mode's queue: messages wait in memory and the consumer runs in
 * the same process. Same contract, minus durability across restarts.
 */
export class MemoryQueue implements TaskQueue {
  readonly kind = 'memory' as const;
  private readonly pending: Buffer[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private consumer: { handler: TaskHandler; prefetch: number } | undefined;

  constructor(private readonly log: Logger) {}

  async publish(body: object): Promise<void> {
    this.pending.push(Buffer.from(JSON.stringify(body)));
    this.pump();
  }

  async consume(handler: TaskHandler, prefetch: number): Promise<void> {
    this.consumer = { handler, prefetch };
    this.pump();
  }

  private pump(): void {
    const consumer = this.consumer;
    while (consumer !== undefined && this.inFlight.size < consumer.prefetch && this.pending.length > 0) {
      const body = this.pending.shift() as Buffer;
      const p = this.run(consumer.handler, body);
      this.inFlight.add(p);
      void p.finally(() => {
        this.inFlight.delete(p);
        this.pump();
      });
    }
  }

  private async run(handler: TaskHandler, body: Buffer): Promise<void> {
    try {
      await handler(body);
    } catch (err) {
      if (err instanceof PoisonMessage) {
        this.log.error({ err: err.message }, 'poison message dropped');
        return;
      }
      this.log.warn({ err: err instanceof Error ? err.message : err }, 'task failed; will be retried');
      await sleep(RETRY_PAUSE_MS);
      this.pending.push(body);
    }
  }

  async stopConsuming(): Promise<void> {
    this.consumer = undefined;
    await Promise.allSettled([...this.inFlight]);
  }

  isConnected(): boolean {
    return true;
  }

  async close(): Promise<void> {
    await this.stopConsuming();
    this.pending.length = 0;
  }
}

/** RabbitMQ when RMQ_URL is set, else the in-process queue. */
export async function createQueue(config: Config, log: Logger): Promise<TaskQueue> {
  if (config.rmqUrl === undefined) return new MemoryQueue(log);
  const q = new RabbitQueue(config.rmqUrl, config.search.queue, log);
  await q.start(5000);
  return q;
}
