import { memberOfChat, storeBatch, type BatchItem, type StoredInBatch } from '../../db/messages';
import { keyedMessage } from '../../db/idempotency-keys';
import { isUnavailable } from '../../errors';
import type { Db } from '../../infra/db';
import type { Logger } from '../../infra/logger';
import type { PendingListCleaner } from './index-upkeep';

/** What became of one post of a batch. */
export type Outcome =
  | { stored: StoredInBatch }
  /** The key was answered before: the first message's id (dashed). */
  | { duplicateOf: string }
  | { missing: 'chat' | 'member' };

/** Left out for a reason that passed before the answer was read (a key that expired meanwhile): run again. */
type Again = { again: true };

interface Pending {
  item: BatchItem;
  resolve(o: Outcome): void;
  reject(err: unknown): void;
}

/** Most posts one statement takes; more wait for the next. */
const MAX_BATCH = 1000;
/**
 * Batches one process commits at once. Two let a batch for other chats run
 * while one waits for a row lock or its WAL flush, and keep both cores busy;
 * posts still gather while both are in flight.
 */
const MAX_IN_FLIGHT = 2;
/** Deadlock / serialization failure: the batch is simply run again. */
const RETRYABLE = new Set(['40P01', '40001']);

function codeOf(err: unknown): string {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : '';
}

/**
 * Group commit for the `db_direct` mode. While batches are being committed
 * (at most MAX_IN_FLIGHT), the posts that arrive wait; when one is done they
 * all go in the next batch,
 * one statement (`storeBatch`): one chat-row update per chat, one multi-row
 * insert, one commit and WAL flush for all of them. Under no load a batch is
 * a single post and nothing waits. Each post is answered with its own
 * outcome: a refused one (not a member, unknown chat, key taken) never fails
 * the others, and a batch that fails for one bad row is split until the bad
 * row fails alone.
 */
export class GroupCommitter {
  private queue: Pending[] = [];
  private running = 0;

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    private readonly cleaner?: PendingListCleaner,
  ) {}

  /** Stores `item` with whatever else arrives meanwhile; resolves once committed. */
  submit(item: BatchItem): Promise<Outcome> {
    return new Promise<Outcome>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.running >= MAX_IN_FLIGHT || this.queue.length === 0) return;
    this.running++;
    // A key sent twice in one batch: the second waits for the next batch, where it finds the first's answer.
    const seen = new Set<string>();
    const batch: Pending[] = [];
    const later: Pending[] = [];
    for (const p of this.queue) {
      const k = p.item.key === undefined ? undefined : `${p.item.key.ownerId}\n${p.item.key.key}`;
      if (batch.length >= MAX_BATCH || (k !== undefined && seen.has(k))) later.push(p);
      else {
        if (k !== undefined) seen.add(k);
        batch.push(p);
      }
    }
    this.queue = later;
    void this.run(batch).finally(() => {
      this.running--;
      this.kick();
    });
  }

  private async run(batch: Pending[]): Promise<void> {
    let outcomes: (Outcome | Again)[];
    try {
      outcomes = await this.commit(batch.map((p) => p.item));
    } catch (err) {
      if (batch.length === 1 || isUnavailable(err)) {
        for (const p of batch) p.reject(err);
        return;
      }
      // One row the database refuses must not fail the rest: halve until it is alone.
      this.log.warn({ err: err instanceof Error ? err.message : err, size: batch.length }, 'batch insert failed; splitting it');
      const mid = Math.ceil(batch.length / 2);
      await this.run(batch.slice(0, mid));
      await this.run(batch.slice(mid));
      return;
    }
    batch.forEach((p, i) => {
      const o = outcomes[i];
      if ('again' in o) this.queue.push(p);
      else p.resolve(o);
    });
  }

  /** The batch statement, run again after a deadlock or serialization failure. */
  private async storeRetrying(items: BatchItem[]): Promise<StoredInBatch[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await storeBatch(this.db, items);
      } catch (err) {
        if (!RETRYABLE.has(codeOf(err)) || attempt >= 5) throw err;
      }
    }
  }

  /** One statement for the batch, then the reason for each post it left out. */
  private async commit(items: BatchItem[]): Promise<(Outcome | Again)[]> {
    const rows = await this.storeRetrying(items);
    if (rows.length > 0) this.cleaner?.nudge();
    const byIndex = new Map(rows.map((r) => [r.index, r]));
    return Promise.all(
      items.map(async (item, i): Promise<Outcome | Again> => {
        const stored = byIndex.get(i);
        if (stored !== undefined) return { stored };
        // Membership before the key, as the other modes check it: a post that
        // could never be stored gets its 404, not the answer to an earlier one.
        const m = await memberOfChat(this.db, item.chatId, item.memberId, item.accountId);
        if ('missing' in m) return { missing: m.missing };
        if (item.key !== undefined) {
          const first = await keyedMessage(this.db, item.key.ownerId, item.key.key);
          if (first !== undefined) return { duplicateOf: first };
        }
        return { again: true };
      }),
    );
  }
}
