import { cleanSearchPendingLists } from '../../db/messages';
import type { Db } from '../../infra/db';
import type { Logger } from '../../infra/logger';

/**
 * Keeps the search indexes' pending lists short, beside the write path
 * rather than in it. New messages reach the full-text and trigram indexes
 * through GIN pending lists (migrations 008-010); when a list passes its
 * limit, the insert that filled it moves the whole list into the index
 * before it returns, and that move was most of what a synchronizer batch
 * cost (docs/performance.md). After a store is nudged, this runs
 * `cleanSearchPendingLists` on its own pool connection (one process at a
 * time, by an advisory lock), no sooner than `gapMs` after the last run
 * ended, at most one run in flight; inserts that fill a list meanwhile find
 * the move under way and skip it. `gapMs` 0 turns it off (the inserts and
 * autovacuum then move the lists, as before). Not run in the embedded mode:
 * PGlite has one connection, so the move would wait in line with the writes.
 */
export class PendingListCleaner {
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;
  /** Set when the role may not clean (42501): then never again. */
  private disabled = false;
  private lastEnd = 0;

  /** `clean` moves the lists and answers the pages it removed, or null when another process was at it. */
  constructor(
    private readonly clean: () => Promise<number | null>,
    private readonly gapMs: number,
    private readonly log: Logger,
  ) {}

  /** Messages were stored: clean once the gap since the last run has passed. */
  nudge(): void {
    if (this.gapMs === 0 || this.disabled) return;
    this.dirty = true;
    this.schedule();
  }

  private schedule(): void {
    if (this.running !== undefined || this.timer !== undefined || !this.dirty || this.disabled) return;
    const wait = Math.max(0, this.lastEnd + this.gapMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.run();
    }, wait);
    this.timer.unref();
  }

  private run(): void {
    this.dirty = false;
    const began = Date.now();
    this.running = this.clean().then(
      (pages) => {
        if (pages !== null && pages > 0) this.log.debug({ pages, ms: Date.now() - began }, 'search pending lists cleaned');
      },
      (err: unknown) => {
        const code = (err as { code?: unknown }).code;
        if (code === '42501') {
          // Not the owner of the indexes: leave the lists to the inserts and autovacuum.
          this.disabled = true;
          this.log.warn('the database role does not own the search indexes; their pending lists are left to the inserts and autovacuum');
        } else {
          this.log.warn({ err: err instanceof Error ? err.message : err }, 'could not clean the search pending lists; trying again after the next store');
        }
      },
    ).finally(() => {
      this.running = undefined;
      this.lastEnd = Date.now();
      this.schedule();
    });
  }

  /**
   * Drops the run that waits for its gap and waits for the one in flight (at
   * shutdown, after the last store). A later store nudges it again: apps
   * that share one database in a test process share one cleaner.
   */
  async stop(): Promise<void> {
    this.dirty = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}

const cleaners = new WeakMap<Db, PendingListCleaner>();

/** The process's cleaner for this database: off in the embedded mode and when INDEX_CLEAN_MS is 0. */
export function pendingListCleaner(deps: { db: Db; log: Logger; config: { databaseUrl?: string; indexCleanMs: number } }): PendingListCleaner {
  let c = cleaners.get(deps.db);
  if (c === undefined) {
    const db = deps.db;
    c = new PendingListCleaner(() => cleanSearchPendingLists(db), deps.config.databaseUrl === undefined ? 0 : deps.config.indexCleanMs, deps.log.child({ component: 'index-upkeep' }));
    cleaners.set(deps.db, c);
  }
  return c;
}
