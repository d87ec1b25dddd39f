import type { Kv } from '../../infra/kv';

export type TaskStatus = 'WAITING' | 'IN_PROCESS' | 'SUCCESS' | 'FAILED';

/** A search task as kept in the key-value store. */
export interface Task {
  id: string;
  owner: string;
  phrase: string;
  status: TaskStatus;
  attempts: number;
  createdAt: number;
  finishedAt?: number;
}

/** One result as the results page answers it (read from PostgreSQL by its stored id). */
export interface TaskResult {
  message_id: string;
  chat_id: string;
  /** The author: member id in the chat and the name there. */
  user_id: string;
  user_name: string;
  text: string;
  created_at: string;
}

const STATUSES: readonly string[] = ['WAITING', 'IN_PROCESS', 'SUCCESS', 'FAILED'];

function parseTask(raw: string | null): Task | undefined {
  if (raw === null) return undefined;
  try {
    const v = JSON.parse(raw) as Record<string, unknown>;
    if (
      typeof v.id === 'string' &&
      typeof v.owner === 'string' &&
      typeof v.phrase === 'string' &&
      typeof v.status === 'string' &&
      STATUSES.includes(v.status) &&
      typeof v.attempts === 'number' &&
      typeof v.createdAt === 'number'
    ) {
      return v as unknown as Task;
    }
  } catch {
    // An unreadable record is as good as none.
  }
  return undefined;
}

// Results are kept as message ids. Records written before 2026-12-07 held whole results; their ids still count.
function parseResults(raw: string | null): string[] | undefined {
  if (raw === null) return undefined;
  try {
    const v: unknown = JSON.parse(raw);
    if (!Array.isArray(v)) return undefined;
    return v.map((r: unknown) => (typeof r === 'object' && r !== null ? (r as { message_id?: unknown }).message_id : r)).filter((r): r is string => typeof r === 'string');
  } catch {
    return undefined;
  }
}

/**
 * Task records and results in the key-value store (Redis in the services
 * mode). A task not yet finished lives for `pendingTtlSeconds`; a finished one
 * and its results for `doneTtlSeconds` after completion.
 */
export class TaskStore {
  constructor(
    private readonly kv: Kv,
    private readonly doneTtlSeconds: number,
    private readonly pendingTtlSeconds = Math.max(doneTtlSeconds, 24 * 3600),
  ) {}

  private static key(id: string): string {
    return `task:${id}`;
  }

  private static resultsKey(id: string): string {
    return `task:${id}:results`;
  }

  /**
   * How many unfinished (WAITING or IN_PROCESS) tasks an account has: counted
   * up when one is recorded, down when it finishes or is forgotten. The count
   * is deleted when it comes back to 0, and otherwise lapses
   * `pendingTtlSeconds` (a day, as long as an unfinished task lives) after it
   * was started, so a task that expired unrun is not counted for ever.
   */
  private static unfinishedKey(owner: string): string {
    return `search-unfinished:${owner}`;
  }

  /** Records a new WAITING task. */
  async create(id: string, owner: string, phrase: string): Promise<Task> {
    return (await this.createWithin(id, owner, phrase, Infinity)) as Task;
  }

  /**
   * Records a new WAITING task unless its owner already has `maxUnfinished`
   * unfinished ones: then it records nothing and answers undefined. Each
   * WAITING task keeps its phrase for a day, so without a bound a flood of
   * searches while no consumer runs would grow the store without end.
   */
  async createWithin(id: string, owner: string, phrase: string, maxUnfinished: number): Promise<Task | undefined> {
    const counted = TaskStore.unfinishedKey(owner);
    // One atomic step per request: of concurrent ones past the bound, each sees a count above it and gives its place back.
    if ((await this.kv.incr(counted, this.pendingTtlSeconds)) > maxUnfinished) {
      await this.kv.incr(counted, 0, -1);
      return undefined;
    }
    const task: Task = { id, owner, phrase, status: 'WAITING', attempts: 0, createdAt: Date.now() };
    try {
      await this.kv.set(TaskStore.key(id), JSON.stringify(task), this.pendingTtlSeconds);
    } catch (err) {
      await this.kv.incr(counted, 0, -1).catch(() => {});
      throw err;
    }
    return task;
  }

  /** The task, if it exists and has not expired. */
  async get(id: string): Promise<Task | undefined> {
    return parseTask(await this.kv.get(TaskStore.key(id)));
  }

  /** Marks the task IN_PROCESS and counts the attempt. */
  async start(task: Task): Promise<Task> {
    const next: Task = { ...task, status: 'IN_PROCESS', attempts: task.attempts + 1 };
    await this.kv.set(TaskStore.key(task.id), JSON.stringify(next), this.pendingTtlSeconds);
    return next;
  }

  /** Puts a task that could not run back as it was before `start` (WAITING, its attempt not counted). */
  async putBack(task: Task): Promise<void> {
    const waiting: Task = { ...task, status: 'WAITING' };
    await this.kv.set(TaskStore.key(task.id), JSON.stringify(waiting), this.pendingTtlSeconds);
  }

  /**
   * Stores the results (their message ids in wire form, in result order), then marks SUCCESS: a
   * reader who sees SUCCESS always finds the results. Ids, not texts: 100 results of long
   * messages would be 6 MB per task, kept for SEARCH_TASK_TTL_SECONDS, however often a client searches.
   */
  async succeed(task: Task, results: string[]): Promise<void> {
    // The results outlive the record by a little, never the other way round.
    await this.kv.set(TaskStore.resultsKey(task.id), JSON.stringify(results), this.doneTtlSeconds + 5);
    await this.finish(task, 'SUCCESS');
  }

  /** Marks the task FAILED for good. */
  async fail(task: Task): Promise<void> {
    await this.finish(task, 'FAILED');
  }

  private async finish(task: Task, status: 'SUCCESS' | 'FAILED'): Promise<void> {
    const done: Task = { ...task, status, finishedAt: Date.now() };
    await this.kv.set(TaskStore.key(task.id), JSON.stringify(done), this.doneTtlSeconds);
    await this.kv.incr(TaskStore.unfinishedKey(task.owner), 0, -1);
  }

  /** The stored results of a finished task: message ids in wire form, in result order. */
  async results(id: string): Promise<string[] | undefined> {
    return parseResults(await this.kv.get(TaskStore.resultsKey(id)));
  }

  /** Forgets an unfinished task (used when it could not be queued). */
  async remove(task: Task): Promise<void> {
    await this.kv.del(TaskStore.key(task.id));
    await this.kv.incr(TaskStore.unfinishedKey(task.owner), 0, -1);
  }
}
