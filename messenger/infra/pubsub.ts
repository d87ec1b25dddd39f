import { Redis } from 'ioredis';
import { BackendUnavailable } from './errors';
import type { Logger } from './logger';

/**
 * A broadcast channel between the processes of one deployment: every
 * message published reaches every subscribed process, the publisher's own
 * included. Memory in the embedded mode; Redis pub/sub in the services mode.
 * Delivery is best effort (a process that is down misses what was said).
 */
export interface PubSub {
  readonly kind: 'redis' | 'memory';
  publish(message: string): Promise<void>;
  /**
   * Starts delivering every message to `onMessage`; call once per process.
   * `onGap` runs each time the subscription is back after it was lost (what
   * was published meanwhile never reaches this process), once it is in
   * place again: from then on nothing more is missed.
   */
  subscribe(onMessage: (message: string) => void, onGap?: () => void): Promise<void>;
  close(): Promise<void>;
}

/** The embedded mode's channel: one process, delivered on the next turn of the event loop like a network hop. */
export class MemoryPubSub implements PubSub {
  readonly kind = 'memory' as const;
  private readonly listeners = new Set<(message: string) => void>();

  async publish(message: string): Promise<void> {
    for (const fn of this.listeners) setImmediate(fn, message);
  }

  async subscribe(onMessage: (message: string) => void, _onGap?: () => void): Promise<void> {
    // One process: nothing published here can be missed here.
    this.listeners.add(onMessage);
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }
}

/**
 * Redis pub/sub on one channel (`<prefix>events`): one publishing and one
 * subscribing connection per process, both reconnecting with backoff.
 * ioredis re-subscribes after a reconnect by itself.
 */
export class RedisPubSub implements PubSub {
  readonly kind = 'redis' as const;
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly channel: string;

  constructor(url: string, prefix: string, log: Logger) {
    const opts = {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 3000,
      retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 3000),
    };
    this.channel = `${prefix}events`;
    this.pub = new Redis(url, opts);
    // The subscriber keeps its commands until connected, so SUBSCRIBE is not lost at start.
    this.sub = new Redis(url, { ...opts, enableOfflineQueue: true, maxRetriesPerRequest: null });
    for (const [name, conn] of [['publish', this.pub], ['subscribe', this.sub]] as const) {
      let down = false;
      conn.on('error', (err: Error) => {
        if (!down) log.warn({ err: err.message, connection: name }, 'redis pub/sub connection error');
        down = true;
      });
      conn.on('ready', () => {
        if (down) log.info({ connection: name }, 'redis pub/sub connection restored');
        down = false;
      });
    }
  }

  async publish(message: string): Promise<void> {
    try {
      await this.pub.publish(this.channel, message);
    } catch (err) {
      throw new BackendUnavailable('redis', err instanceof Error ? err.message : String(err));
    }
  }

  async subscribe(onMessage: (message: string) => void, onGap?: () => void): Promise<void> {
    this.sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel) onMessage(message);
    });
    // A subscriber connection that closed (Redis restarted, the network cut)
    // missed what was published until it is subscribed again: ioredis
    // re-subscribes on 'ready'; this SUBSCRIBE goes after its own, so once it
    // is answered the channel is ours again, and `onGap` says what was lost.
    let lost = false;
    this.sub.on('close', () => {
      lost = true;
    });
    this.sub.on('ready', () => {
      if (!lost) return;
      lost = false;
      this.sub.subscribe(this.channel).then(
        () => onGap?.(),
        () => {
          // Not subscribed after all: the next 'ready' tries again.
          lost = true;
        },
      );
    });
    // Not awaited: with Redis away at start the subscription is made when it comes back.
    this.sub.subscribe(this.channel).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.sub.disconnect();
    this.pub.disconnect();
  }
}
