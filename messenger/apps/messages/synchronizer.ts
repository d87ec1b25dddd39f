import { lockChats, storeBatch, storedMessages, type BatchItem, type StoredInBatch } from '../../db/messages';
import { isUnavailable } from '../../errors';
import { parseId, toWireId } from '../../ids';
import { PoisonMessage, type BatchHandler, type Broker } from '../../infra/broker';
import { syncLag, syncMessages } from '../../infra/metrics';
import type { Deps } from '../../types';
import { pendingListCleaner } from './index-upkeep';

/** A message as it waits in SYNC_QUEUE (ids dashed, as PostgreSQL writes them). */
interface QueuedMessage {
  v: 1;
  id: string;
  chat_id: string;
  member_id: string;
  account_id: string | null;
  user_name: string;
  text: string;
  /** When it was queued (ms since the epoch), for the lag metric. */
  queued_at: number;
}

/** The queue body of a checked post. */
export function queuedMessage(m: { id: string; chatId: string; memberId: string; accountId: string | null; userName: string; text: string }): QueuedMessage {
  return { v: 1, id: m.id, chat_id: m.chatId, member_id: m.memberId, account_id: m.accountId, user_name: m.userName, text: m.text, queued_at: Date.now() };
}

/** Reads a queue body; anything that is not exactly a queued message is poison. */
export function parseQueued(body: Buffer): QueuedMessage {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw new PoisonMessage('queued message is not JSON');
  }
  if (typeof v !== 'object' || v === null) throw new PoisonMessage('queued message is not an object');
  const o = v as Record<string, unknown>;
  const id = parseId(o.id);
  const chat = parseId(o.chat_id);
  const member = parseId(o.member_id);
  const account = o.account_id === null ? null : parseId(o.account_id);
  if (o.v !== 1 || id === null || chat === null || member === null || (account === null && o.account_id !== null)) {
    throw new PoisonMessage('queued message has bad ids');
  }
  if (typeof o.text !== 'string' || o.text.length === 0 || o.text.includes('\u0000') || !o.text.isWellFormed() || typeof o.user_name !== 'string') {
    throw new PoisonMessage('queued message has bad text');
  }
  const queuedAt = typeof o.queued_at === 'number' ? o.queued_at : Date.now();
  return { v: 1, id, chat_id: chat, member_id: member, account_id: account, user_name: o.user_name, text: o.text, queued_at: queuedAt };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());
/** Pauses between attempts while the database is unavailable, before the batch goes back to the queue. */
const BACKOFF_MS = [100, 200, 400, 800, 1600, 3200];

/**
 * The synchronizer of the write-behind mode: takes batches from SYNC_QUEUE
 * (SYNC_BULK_SIZE messages, or what came within SYNC_FLUSH_MS; a message after
 * SYNC_FLUSH_MS of quiet goes at once), stores each
 * batch in one transaction (chat rows locked in id order, then the same
 * statement as the group commit, which skips ids stored already, so a
 * redelivered batch stores nothing twice), and returns; the broker then
 * acknowledges it. `message.stored` follows for the rows actually inserted,
 * in chat order. The database being down is retried with backoff and then
 * the batch goes back to the queue; a message that can never be stored
 * (unparseable, its chat or member gone, a row the database refuses) is
 * dead-lettered alone. Run by the `synchronizer` role
 * (messenger-run-synchronizer), or inside the web process in the embedded
 * mode: the same code.
 */
export function synchronizer(deps: Deps): { start(): Promise<void>; consuming(): Promise<boolean>; stop(): Promise<void>; handle: BatchHandler } {
  const { config, db, events } = deps;
  const log = deps.log.child({ component: 'synchronizer' });
  const cleaner = pendingListCleaner(deps);
  // Events go out after the batch is acknowledged, batch after batch, so the next insert does not wait for them.
  let announcing: Promise<void> = Promise.resolve();

  const announce = (rows: { item: QueuedMessage; row: StoredInBatch }[]) => {
    // Published together, so the bus sends them as one flush; by seq, so each chat's are in its order.
    const ordered = [...rows].sort((a, b) => a.row.seq - b.row.seq);
    announcing = announcing.then(() =>
      Promise.all(
        ordered.map(({ item, row }) =>
          events.publish('message.stored', {
            chatId: toWireId(item.chat_id),
            messageId: toWireId(item.id),
            userId: toWireId(item.member_id),
            userName: row.user_name,
            accountId: item.account_id,
            text: item.text,
            createdAt: row.created_at.toISOString(),
            seq: Number(row.seq),
          }),
        ),
      ).then(() => undefined),
    );
  };

  /**
   * Stores `items` in one transaction; returns what was inserted, what was
   * stored before (a redelivery: see `handle`) and what can never be.
   */
  async function store(items: QueuedMessage[]): Promise<{ stored: StoredInBatch[]; before: StoredInBatch[]; dead: number[] }> {
    const batch: BatchItem[] = items.map((m) => ({ id: m.id, chatId: m.chat_id, memberId: m.member_id, accountId: m.account_id, text: m.text }));
    const stored = await db.transaction(async (trx) => {
      await lockChats(trx, batch.map((b) => b.chatId));
      return storeBatch(trx, batch);
    });
    const got = new Set(stored.map((r) => r.index));
    const left = items.map((m, i) => ({ m, i })).filter(({ i }) => !got.has(i));
    const already = await storedMessages(db, left.map(({ m }) => m.id));
    const before: StoredInBatch[] = [];
    const dead: number[] = [];
    for (const { m, i } of left) {
      const row = already.get(m.id);
      if (row === undefined) dead.push(i);
      else before.push({ ...row, index: i });
    }
    return { stored, before, dead };
  }

  /** Stores with backoff while the database is unavailable; splits a batch the database refuses until the bad row is alone. */
  async function storeIsolating(items: QueuedMessage[], offset: number): Promise<{ stored: StoredInBatch[]; before: StoredInBatch[]; dead: number[] }> {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await store(items);
        const shift = (rows: StoredInBatch[]) => rows.map((s) => ({ ...s, index: s.index + offset }));
        return { stored: shift(r.stored), before: shift(r.before), dead: r.dead.map((i) => i + offset) };
      } catch (err) {
        if (isUnavailable(err) || (err as { code?: unknown }).code === '40P01') {
          if (attempt >= BACKOFF_MS.length) throw err; // back to the queue; the broker redelivers after a pause
          if (attempt === 0) log.warn({ err: err instanceof Error ? err.message : err }, 'database unavailable; retrying the batch');
          await sleep(BACKOFF_MS[attempt]);
          continue;
        }
        if (items.length === 1) {
          log.error({ err: err instanceof Error ? err.message : err, id: items[0].id }, 'message refused by the database; dead-lettered');
          return { stored: [], before: [], dead: [offset] };
        }
        const mid = Math.ceil(items.length / 2);
        const a = await storeIsolating(items.slice(0, mid), offset);
        const b = await storeIsolating(items.slice(mid), offset + mid);
        return { stored: [...a.stored, ...b.stored], before: [...a.before, ...b.before], dead: [...a.dead, ...b.dead] };
      }
    }
  }

  const handle: BatchHandler = async (bodies) => {
    const poison: number[] = [];
    const good: { m: QueuedMessage; at: number }[] = [];
    // A post retried with its Idempotency-Key is queued again under the first id, so one batch may
    // hold a message twice. Only its first copy is stored: the statement would count a place in the
    // chat for every copy and insert one, leaving a hole that inflates every member's unread count.
    const ids = new Set<string>();
    let copies = 0;
    bodies.forEach((b, at) => {
      try {
        const m = parseQueued(b);
        if (ids.has(m.id)) {
          copies++;
          return;
        }
        ids.add(m.id);
        good.push({ m, at });
      } catch (err) {
        log.error({ err: err instanceof Error ? err.message : err }, 'unreadable queued message; dead-lettered');
        poison.push(at);
      }
    });
    if (good.length > 0) {
      const items = good.map((g) => g.m);
      const began = Date.now();
      const { stored, before, dead } = await storeIsolating(items, 0);
      const now = Date.now();
      log.debug({ size: items.length, stored: stored.length, oldestMs: began - Math.min(...items.map((m) => m.queued_at)), storeMs: now - began }, 'batch stored');
      for (const s of stored) syncLag.observe(Math.max(0, now - items[s.index].queued_at) / 1000);
      syncMessages.inc({ outcome: 'stored' }, stored.length);
      syncMessages.inc({ outcome: 'duplicate' }, before.length);
      for (const i of dead) poison.push(good[i].at);
      if (dead.length > 0) log.error({ ids: dead.map((i) => items[i].id) }, 'messages whose chat or member is gone; dead-lettered');
      // A message stored before comes back only when a synchronizer committed it and stopped before its
      // acknowledgement, maybe before announcing it: announce it again (at least once). Every reaction is
      // idempotent: a cache version bumped twice, a read marker that never moves back, frames a
      // connection has had already are dropped by their seq.
      if (before.length > 0) log.info({ count: before.length }, 'messages stored before (a redelivery) announced again');
      announce([...stored, ...before].map((row) => ({ item: items[row.index], row })));
      if (stored.length > 0) cleaner.nudge();
    }
    syncMessages.inc({ outcome: 'duplicate' }, copies);
    syncMessages.inc({ outcome: 'dead' }, poison.length);
    return { poison };
  };

  const brokerOf = (): Broker => {
    if (deps.broker === undefined) throw new Error('the synchronizer needs a broker');
    return deps.broker;
  };
  /** True once the consumer is attached to SYNC_QUEUE, false when the broker closed first. */
  const consuming = () => brokerOf().attached(config.sync.queue);

  return {
    handle,
    /** Registers the consumer; it attaches whenever RabbitMQ is reachable (logged then, see `consuming`). */
    async start() {
      await brokerOf().declare(config.sync.queue);
      await brokerOf().consumeBatches(config.sync.queue, handle, { size: config.sync.bulkSize, flushMs: config.sync.flushMs });
      void consuming().then((ok) => ok && log.info({ queue: config.sync.queue, bulkSize: config.sync.bulkSize, flushMs: config.sync.flushMs }, 'synchronizer consuming'));
    },
    consuming,
    async stop() {
      await brokerOf().stopConsuming();
      await announcing;
      await cleaner.stop();
    },
  };
}
