/**
 * Domain events: what happened, published after commit, for other apps to
 * react to. Apps never call each other; the caching app invalidates on
 * `message.stored`, the realtime app fans events out to sockets.
 *
 * Two ways to listen:
 * - `react(name, fn)`: in the process that published the event, awaited
 *   before `publish` resolves (so a cache is invalidated before the 201 that
 *   caused it is sent). A failing reactor is logged, never thrown: the change
 *   is committed already.
 * - `subscribe(name, fn)`: once per event on every instance, through the
 *   pub/sub port (memory in the embedded mode, one Redis channel in the
 *   services mode, each process subscribing once). Best effort: the database
 *   stays the truth, and a client that missed something catches up from it.
 *
 * Publishing is coalesced: the events published within one turn of the event
 * loop (a group commit answers all its posts in one turn) go out together, as
 * one flush. Each reactor gets the events of a flush as one list, in publish
 * order (one cache bump per chat, one read-marker statement for the lot), and
 * the flush crosses the pub/sub channel as one message. Under no load a flush
 * is a single event. A reactor may add follow-up events to its flush (the
 * read markers a post moved): their own reactors run next, and they cross
 * the channel in the same message, after the events that caused them.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from './infra/logger';
import type { PubSub } from './infra/pubsub';
import { eventsPublished } from './infra/metrics';

/**
 * A message has its place in the chat order (committed). At least once: the
 * write-behind synchronizer announces a message again when it comes back
 * after a crash between its commit and its acknowledgement
 * (docs/storage-modes.md), so a reaction to it must take a repeat.
 */
export interface MessageStored {
  chatId: string;
  messageId: string;
  /** The poster's identity in the chat. */
  userId: string;
  userName: string;
  /** The poster's account (null with auth off). */
  accountId: string | null;
  text: string;
  createdAt: string;
  /**
   * Position in the chat, 1-based, gap-free in commit order; 0 in the
   * no_storage mode, where a message is delivered live and never stored
   * (docs/storage-modes.md).
   */
  seq: number;
}

/** Someone joined a chat (or a direct chat was made). */
export interface MemberJoined {
  chatId: string;
  userId: string;
  userName: string;
  accountId: string | null;
}

/** An account's read marker in a chat moved forward (or, seq 0, it read a live message of no_storage). */
export interface ReadMoved {
  accountId: string;
  chatId: string;
  messageId: string;
  unread: number;
  /**
   * The marker's position (the message's seq): markers only move forward,
   * so of two events for one account and chat, the one with the higher seq
   * is the newer, whatever order they arrive in. 0: a live message of the
   * no_storage mode was read, the marker did not move. Every publisher of
   * this version sets it; an instance of the version before it (a rolling
   * deploy) does not, and a subscriber then finds it from `messageId`.
   */
  seq?: number;
}

/** Sessions that stopped working (logout, expiry, refresh, password change, theft). */
export interface SessionEnded {
  accountId: string;
  /** SHA-256 (hex) of each ended session's token. */
  tokenHashes: string[];
  reason: string;
}

/** An account came online (its first real-time connection anywhere) or went offline (its last one closed). */
export interface PresenceChanged {
  accountId: string;
  online: boolean;
}

export interface EventMap {
  'message.stored': MessageStored;
  'member.joined': MemberJoined;
  'read.moved': ReadMoved;
  'session.ended': SessionEnded;
  'presence.changed': PresenceChanged;
}
export type EventName = keyof EventMap;

/** `number?`: a number, or absent (a field older versions do not send). */
type FieldKind = 'string' | 'number' | 'number?' | 'boolean' | 'string|null' | 'string[]';
const SHAPES: { [K in EventName]: Record<keyof EventMap[K], FieldKind> } = {
  'message.stored': {
    chatId: 'string', messageId: 'string', userId: 'string', userName: 'string',
    accountId: 'string|null', text: 'string', createdAt: 'string', seq: 'number',
  },
  'member.joined': { chatId: 'string', userId: 'string', userName: 'string', accountId: 'string|null' },
  // seq: absent from an instance of the previous version (rolling deploy); until 2026-12-07 such events were refused here.
  'read.moved': { accountId: 'string', chatId: 'string', messageId: 'string', unread: 'number', seq: 'number?' },
  'session.ended': { accountId: 'string', tokenHashes: 'string[]', reason: 'string' },
  'presence.changed': { accountId: 'string', online: 'boolean' },
};

function fits(value: unknown, kind: FieldKind): boolean {
  switch (kind) {
    case 'string': return typeof value === 'string';
    case 'number': return typeof value === 'number' && Number.isFinite(value);
    case 'number?': return value === undefined || (typeof value === 'number' && Number.isFinite(value));
    case 'boolean': return typeof value === 'boolean';
    case 'string|null': return value === null || typeof value === 'string';
    case 'string[]': return Array.isArray(value) && value.every((v) => typeof v === 'string');
  }
}

/** An event as it travels between processes. */
interface Envelope {
  name: EventName;
  data: unknown;
}

/** An event, checked. */
export type AnyEvent = { [K in EventName]: { name: K; data: EventMap[K] } }[EventName];

/**
 * Parses one flush from the wire (`{"events": [envelope, ...]}`): the events
 * that are exactly ones of ours, in order, and how many were not; `lost`
 * when its publisher says events it could not publish were dropped (see
 * EventBus). Undefined when the message itself is not a flush.
 */
export function parseFlush(raw: string): { events: AnyEvent[]; rejected: number; lost?: true } | undefined {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const list = (v as { events?: unknown }).events;
  if (!Array.isArray(list)) return undefined;
  const events: AnyEvent[] = [];
  for (const item of list) {
    const event = checkEvent(item);
    if (event !== undefined) events.push(event);
  }
  const flush = { events, rejected: list.length - events.length };
  return (v as { lost?: unknown }).lost === true ? { ...flush, lost: true } : flush;
}

/** One event of a flush; undefined for anything that is not exactly one of ours. */
function checkEvent(v: unknown): AnyEvent | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const { name, data } = v as Partial<Envelope>;
  if (typeof name !== 'string' || !(name in SHAPES) || typeof data !== 'object' || data === null) return undefined;
  const shape = SHAPES[name as EventName] as Record<string, FieldKind>;
  const fields = data as Record<string, unknown>;
  for (const [key, kind] of Object.entries(shape)) if (!fits(fields[key], kind)) return undefined;
  const clean: Record<string, unknown> = {};
  for (const key of Object.keys(shape)) if (fields[key] !== undefined) clean[key] = fields[key];
  return { name, data: clean } as unknown as AnyEvent;
}

type Listener<K extends EventName> = (event: EventMap[K]) => void | Promise<void>;
/** Adds an event to the flush being reacted to (see `Reactor`). */
export type FollowUp = <K extends EventName>(name: K, data: EventMap[K]) => void;
/**
 * A reactor: the events of one flush with this name, in publish order (never
 * empty). Events it causes go out with `also`, in the same flush, rather than
 * through `publish` (which would wait for a flush of their own: one more
 * pub/sub message, and a reactor awaiting it would hold this flush up).
 */
export type Reactor<K extends EventName> = (events: EventMap[K][], also: FollowUp) => Promise<void>;

/** Rounds of follow-ups one flush may have; more means reactors that feed each other (a bug), logged and cut. */
const MAX_ROUNDS = 4;
/**
 * Flushes whose PUBLISH failed are kept, in order, and published again
 * until it works, up to this many bytes of their text or PENDING_MAX_FLUSHES
 * flushes; past that they are dropped and the instances are told
 * (`lost`) instead, so memory stays bounded through a long outage.
 */
const PENDING_MAX_BYTES = 8 * 1024 * 1024;
const PENDING_MAX_FLUSHES = 10_000;
/** How often a failed PUBLISH is tried again. */
const PUBLISH_RETRY_MS = 250;

interface Queued {
  name: EventName;
  data: EventMap[EventName];
  done: () => void;
}

/** The one port apps publish domain events through and listen on. */
export class EventBus {
  private readonly reactors = new Map<EventName, Set<Reactor<EventName>>>();
  private readonly subscribers = new Map<EventName, Set<Listener<EventName>>>();
  private readonly gapListeners = new Set<() => void>();
  private started: Promise<void> | undefined;
  /** Published in this turn of the event loop, not yet flushed. */
  private queued: Queued[] = [];
  /** Flushes whose PUBLISH failed, oldest first, with their event counts: tried again every PUBLISH_RETRY_MS. */
  private pending: { payload: string; counts: Map<EventName, number> }[] = [];
  private pendingBytes = 0;
  /** Unpublished flushes were dropped (past the bound): every instance is told before anything else is published. */
  private dropped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Identifies this process on the shared channel (diagnostics only). */
  readonly origin = randomUUID();

  constructor(
    private readonly pubsub: PubSub,
    private readonly log: Logger,
  ) {}

  /** Which transport carries events between instances. */
  get kind(): PubSub['kind'] {
    return this.pubsub.kind;
  }

  /** Subscribes this process to the shared channel, once. */
  start(): Promise<void> {
    this.started ??= this.pubsub.subscribe(
      (raw) => this.deliver(raw),
      () => this.gap(),
    );
    return this.started;
  }

  /**
   * Runs `fn` each time this process's subscription to the shared channel
   * comes back after it was lost (Redis restarted, the connection cut): the
   * events of every instance published meanwhile never reached this
   * process's subscribers. Called once the subscription is in place again.
   * Returns the undo.
   */
  onGap(fn: () => void): () => void {
    this.gapListeners.add(fn);
    return () => this.gapListeners.delete(fn);
  }

  private gap(why = 'the event subscription was lost and is back; events published meanwhile were missed'): void {
    this.log.warn(why);
    for (const fn of this.gapListeners) {
      try {
        fn();
      } catch (err) {
        this.log.error({ err }, 'event gap listener failed');
      }
    }
  }

  /**
   * Publishes an event of a committed change: local reactors run first and
   * are awaited, then every instance's subscribers get it. Resolves when
   * both are done for the flush this event went out in (a PUBLISH that
   * failed is not waited for: it is tried again later, see `keep`). Never
   * throws: a pub/sub outage delays or loses live delivery only (logged and
   * counted).
   */
  publish<K extends EventName>(name: K, data: EventMap[K]): Promise<void> {
    return new Promise<void>((done) => {
      if (this.queued.length === 0) setImmediate(() => void this.flush());
      this.queued.push({ name, data: data as EventMap[EventName], done });
    });
  }

  /**
   * Sends what was published in the last turn: reactors (per name,
   * concurrently), then the reactors of their follow-ups, and so on; then one
   * pub/sub message with all of it, in that order.
   */
  private async flush(): Promise<void> {
    const batch = this.queued;
    this.queued = [];
    const out: Envelope[] = [];
    let round: Envelope[] = batch.map(({ name, data }) => ({ name, data }));
    for (let n = 1; round.length > 0; n++) {
      out.push(...round);
      const next: Envelope[] = [];
      if (n > MAX_ROUNDS) {
        this.log.error({ events: round.map((e) => e.name) }, 'event reactors keep adding follow-ups; sent without their reactions');
        break;
      }
      await this.runReactors(round, (name, data) => void next.push({ name, data }));
      round = next;
    }
    const counts = new Map<EventName, number>();
    for (const e of out) counts.set(e.name, (counts.get(e.name) ?? 0) + 1);
    const payload = JSON.stringify({ events: out, origin: this.origin });
    // Behind flushes that wait for a retry (or a drop not told yet): in order, after them.
    if (this.pending.length > 0 || this.dropped) this.keep(payload, counts);
    else {
      try {
        await this.pubsub.publish(payload);
        for (const [name, n] of counts) eventsPublished.inc({ event: name, outcome: 'sent' }, n);
      } catch (err) {
        this.log.warn({ err: err instanceof Error ? err.message : err, events: out.length }, 'events not broadcast yet; publishing them again until it works');
        this.keep(payload, counts);
      }
    }
    for (const q of batch) q.done();
  }

  /**
   * Keeps a flush whose PUBLISH failed (or that waits behind one) for the
   * retry. A PUBLISH can fail while every instance's subscription stays up
   * (the publishing connection alone was cut): no instance then sees a gap,
   * so a dropped flush would be lost for good without anyone knowing (until
   * 2026-12-07 it was). Past the bound the kept flushes are dropped, and
   * once publishing works again every instance is told (`lost`), which it
   * handles as a gap in its own subscription: its sockets reconnect and
   * resume.
   */
  private keep(payload: string, counts: Map<EventName, number>): void {
    if (this.dropped) {
      for (const [name, n] of counts) eventsPublished.inc({ event: name, outcome: 'lost' }, n);
    } else {
      this.pending.push({ payload, counts });
      this.pendingBytes += payload.length;
      if (this.pendingBytes > PENDING_MAX_BYTES || this.pending.length > PENDING_MAX_FLUSHES) {
        for (const p of this.pending) for (const [name, n] of p.counts) eventsPublished.inc({ event: name, outcome: 'lost' }, n);
        this.log.warn({ flushes: this.pending.length, bytes: this.pendingBytes }, 'too many events waiting to be published; dropped, every instance will be told to make its clients resume');
        this.pending = [];
        this.pendingBytes = 0;
        this.dropped = true;
      }
    }
    this.keepTrying();
  }

  /** Publishes what `keep` kept, oldest first (the drop notice before all); on a failure, again later. */
  private async retry(): Promise<void> {
    try {
      if (this.dropped) {
        await this.pubsub.publish(JSON.stringify({ events: [], lost: true, origin: this.origin }));
        this.dropped = false;
        this.log.info('told every instance that unpublished events were dropped');
      }
      while (this.pending.length > 0 && !this.dropped) {
        const p = this.pending[0];
        await this.pubsub.publish(p.payload);
        // Still the first: a drop meanwhile emptied the list, and the notice goes first.
        if (this.pending[0] !== p) break;
        this.pending.shift();
        this.pendingBytes -= p.payload.length;
        for (const [name, n] of p.counts) eventsPublished.inc({ event: name, outcome: 'sent' }, n);
      }
      this.retryTimer = undefined;
      if (this.dropped) this.keepTrying();
    } catch {
      this.retryTimer = undefined;
      this.keepTrying();
    }
  }

  /** Schedules the retry (unless one is scheduled or running). */
  private keepTrying(): void {
    if (this.closed) return;
    this.retryTimer ??= setTimeout(() => void this.retry(), PUBLISH_RETRY_MS);
    this.retryTimer.unref();
  }

  /** Each reactor once with its events of `round` (by name, in order), all concurrently; failures logged. */
  private async runReactors(round: Envelope[], also: FollowUp): Promise<void> {
    const byName = new Map<EventName, EventMap[EventName][]>();
    for (const { name, data } of round) {
      const list = byName.get(name);
      if (list === undefined) byName.set(name, [data as EventMap[EventName]]);
      else list.push(data as EventMap[EventName]);
    }
    const reactions: Promise<void>[] = [];
    for (const [name, list] of byName) {
      for (const fn of this.reactors.get(name) ?? []) {
        reactions.push(
          (async () => {
            try {
              await fn(list, also);
            } catch (err) {
              this.log.error({ err, event: name }, 'event reactor failed');
            }
          })(),
        );
      }
    }
    await Promise.all(reactions);
  }

  /**
   * Runs `fn` with the `name` events of each flush, in the publishing
   * process, before their publish resolves. Returns the undo.
   */
  react<K extends EventName>(name: K, fn: Reactor<K>): () => void {
    return add(this.reactors, name, fn as unknown as Reactor<EventName>);
  }

  /** Runs `fn` for every `name` event published by any instance. Returns the undo. */
  subscribe<K extends EventName>(name: K, fn: Listener<K>): () => void {
    return add(this.subscribers, name, fn as Listener<EventName>);
  }

  private deliver(raw: string): void {
    const flush = parseFlush(raw);
    if (flush === undefined || flush.rejected > 0) this.log.warn({ rejected: flush?.rejected ?? 'all' }, 'ignored malformed events from the pub/sub channel');
    // Its publisher dropped events it could not publish: as if this subscription had missed them.
    if (flush?.lost === true) this.gap('an instance could not publish some events and dropped them; events were missed');
    for (const event of flush?.events ?? []) {
      for (const fn of this.subscribers.get(event.name) ?? []) {
        try {
          const p = (fn as Listener<typeof event.name>)(event.data);
          if (p instanceof Promise) p.catch((err: unknown) => this.log.error({ err, event: event.name }, 'event subscriber failed'));
        } catch (err) {
          this.log.error({ err, event: event.name }, 'event subscriber failed');
        }
      }
    }
  }

  /** Stops listening (the pub/sub connection itself is closed by its owner). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.reactors.clear();
    this.subscribers.clear();
    this.gapListeners.clear();
  }
}

function add<F>(map: Map<EventName, Set<F>>, name: EventName, fn: F): () => void {
  let set = map.get(name);
  if (set === undefined) {
    set = new Set();
    map.set(name, set);
  }
  set.add(fn);
  return () => set.delete(fn);
}
