import type { Config } from '../../config';
import { searchExact, searchFuzzy, type FoundMessage } from '../../db/search';
import type { Db } from '../../infra/db';
import type { Logger } from '../../infra/logger';
import { searchTaskDuration, searchTasks } from '../../infra/metrics';
import { PoisonMessage, RetryLater, type MessageHandler } from '../../infra/broker';
import { toWireId } from '../../ids';
import type { TaskStore } from './tasks';

/** Most results a task keeps. */
export const MAX_RESULTS = 100;

function isTimeout(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === '57014';
}

/**
 * A PostgreSQL error that the same task meets on every run: a data exception
 * (class 22, such as a NUL in the phrase) or a program limit (class 54, such as
 * a phrase query too deep for the server's stack). Retrying only delays FAILED;
 * anything else (a lost connection, a restart) may pass and is retried.
 */
function failsEveryRun(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^(22|54)[0-9A-Z]{3}$/.test(code);
}

/**
 * PostgreSQL could not be reached at all (refused, no such host, no pooled
 * connection in time, the server still starting): the task never ran. Such
 * a run is not counted as an attempt, so an outage of a few seconds does not
 * turn every queued task FAILED within SEARCH_MAX_ATTEMPTS redeliveries; a
 * run cut off midway (a reset, a terminated backend) still
 * counts, since the task itself may be what kills it.
 */
function neverRan(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === 'KnexTimeoutError') return true;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && ['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', '57P03'].includes(code);
}

/** The two queries a task runs; tests replace them to make one slow or failing. */
export interface SearchQueries {
  exact: typeof searchExact;
  near: typeof searchFuzzy;
}

const QUERIES: SearchQueries = { exact: searchExact, near: searchFuzzy };

function timeoutError(): Error {
  // Stryker disable next-line StringLiteral: the message never leaves the worker (the error is recognised by its code and caught)
  return Object.assign(new Error('search deadline passed'), { code: '57014' });
}

/**
 * Settles like `query`, or rejects as a timeout once `ms` have passed. The
 * database cancels a statement past its statement_timeout itself; this is the
 * backstop for one that cannot (the embedded PGlite has no statement_timeout),
 * so the task keeps its deadline. A late outcome of the query is dropped.
 */
function withinMs<T>(query: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timeoutError()), ms);
  });
  query.catch(() => {});
  return Promise.race([query, late]).finally(() => clearTimeout(timer));
}

// Grace over the deadline for the backstop timer, so the database's own
// statement_timeout normally fires first.
const BACKSTOP_GRACE_MS = 200;

/** Bounds of the pause before a task that could not reach the database is delivered again. */
export const OUTAGE_RETRY_MIN_MS = 500;
export const OUTAGE_RETRY_MAX_MS = 10_000;

/** Reads a queue message: `{"task_id": "<32 hex>"}`, anything else is poison. */
export function parseTaskMessage(body: Buffer): string {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    throw new PoisonMessage('task message is not JSON');
  }
  const id = typeof v === 'object' && v !== null ? (v as Record<string, unknown>).task_id : undefined;
  if (typeof id !== 'string' || !/^[0-9a-f]{32}$/.test(id)) throw new PoisonMessage('task message has no valid task_id');
  return id;
}

/**
 * Runs search tasks. Selection prefers exact phrase matches and fills up with
 * near matches (typos); the kept results are ordered newest first. Past the
 * deadline the search stops and keeps what it found.
 */
export class SearchWorker {
  /** While the database cannot be reached: since when, and how many deliveries were put back. */
  private outage: { since: number; retries: number } | undefined;

  constructor(
    private readonly db: Db,
    private readonly tasks: TaskStore,
    private readonly config: Config['search'],
    private readonly log: Logger,
    private readonly queries: SearchQueries = QUERIES,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * A run that could not reach the database: the first of an outage is
   * logged (one warning per outage, not per retry), and the task is put back
   * after a pause as long as the outage has lasted so far, from
   * OUTAGE_RETRY_MIN_MS to OUTAGE_RETRY_MAX_MS (a single task waits 0.5, 0.5,
   * 1, 2, 4, 8, 10, 10 ... s), shared by every task in hand, so a long outage
   * is tried every 10 s rather than every 0.5 s per task.
   */
  private unreachable(err: unknown, log: Logger): RetryLater {
    const now = this.now();
    if (this.outage === undefined) {
      this.outage = { since: now, retries: 0 };
      this.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'search tasks cannot reach the database; retried with backoff until it answers');
    }
    this.outage.retries += 1;
    const delayMs = Math.min(OUTAGE_RETRY_MAX_MS, Math.max(OUTAGE_RETRY_MIN_MS, now - this.outage.since));
    log.debug({ retryInMs: delayMs }, 'search task could not reach the database; retried, not counted as an attempt');
    return new RetryLater(delayMs, err);
  }

  /** A run reached the database: an outage, if there was one, is over. */
  private reachable(): void {
    if (this.outage === undefined) return;
    this.log.info({ downMs: this.now() - this.outage.since, retries: this.outage.retries }, 'search tasks reach the database again');
    this.outage = undefined;
  }

  /** The queue handler: resolves once the outcome is stored (then the message is acknowledged). */
  readonly handle: MessageHandler = async (body) => {
    const id = parseTaskMessage(body);
    const task = await this.tasks.get(id);
    // Expired, or already finished by an earlier delivery: nothing to do.
    if (task === undefined || task.status === 'SUCCESS' || task.status === 'FAILED') return;
    const log = this.log.child({ taskId: id });
    if (task.attempts >= this.config.maxAttempts) {
      log.error({ attempts: task.attempts }, 'search task failed too often; marked FAILED');
      await this.tasks.fail(task);
      searchTasks.inc({ outcome: 'failed' });
      return;
    }
    const running = await this.tasks.start(task);
    const started = Date.now();
    try {
      const { results, timedOut } = await this.search(running.owner, running.phrase, started + this.config.timeoutMs);
      this.reachable();
      await this.tasks.succeed(running, results);
      const outcome = timedOut ? 'timeout' : 'success';
      searchTasks.inc({ outcome });
      searchTaskDuration.observe({ outcome }, (Date.now() - started) / 1000);
      log.info({ results: results.length, ms: Date.now() - started, attempt: running.attempts, timedOut }, 'search task done');
    } catch (err) {
      if (neverRan(err)) {
        searchTasks.inc({ outcome: 'retry' });
        await this.tasks.putBack(task);
        throw this.unreachable(err, log);
      }
      this.reachable();
      if (failsEveryRun(err)) {
        log.error({ err, attempt: running.attempts }, 'search task failed for a reason a retry cannot change; marked FAILED');
        await this.tasks.fail(running);
        searchTasks.inc({ outcome: 'failed' });
        return;
      }
      searchTasks.inc({ outcome: 'retry' });
      throw err;
    }
  };

  private async search(owner: string, phrase: string, deadline: number): Promise<{ results: string[]; timedOut: boolean }> {
    let exact: FoundMessage[];
    try {
      const left = deadline - Date.now();
      exact = await withinMs(this.queries.exact(this.db, owner, phrase, MAX_RESULTS, left), left + BACKSTOP_GRACE_MS);
    } catch (err) {
      if (!isTimeout(err)) throw err;
      return { results: [], timedOut: true };
    }
    let fuzzy: FoundMessage[] = [];
    let timedOut = false;
    const left = deadline - Date.now();
    if (exact.length < MAX_RESULTS) {
      try {
        if (left <= 0) throw timeoutError();
        const near = this.queries.near(this.db, owner, phrase, exact.map((m) => m.id), MAX_RESULTS - exact.length, left);
        fuzzy = await withinMs(near, left + BACKSTOP_GRACE_MS);
      } catch (err) {
        if (!isTimeout(err)) throw err;
        timedOut = true;
      }
    }
    const results = [...exact, ...fuzzy]
      // Newest first as the queries order them: the messages of one batch share a time, and their
      // places in the chat (seq), not their ids, say which came later.
      .sort((a, b) => b.created_at.getTime() - a.created_at.getTime() || b.seq - a.seq || (a.id < b.id ? 1 : -1))
      .map((m) => toWireId(m.id));
    return { results, timedOut };
  }
}
