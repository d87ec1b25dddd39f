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

/** One stored result, already in its wire form. */
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

function parseResults(raw: string | null): TaskResult[] | undefined {
  if (raw === null) return undefined;
  try {
    const v: unknown = JSON.parse(raw);
    return Array.isArray(v) ? (v as TaskResult[]) : undefined;
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

  /** Records a new WAITING task. */
  async create(id: string, owner: string, phrase: string): Promise<Task> {
    const task: Task = { id, owner, phrase, status: 'WAITING', attempts: 0, createdAt: Date.now() };
    await this.kv.set(TaskStore.key(id), JSON.stringify(task), this.pendingTtlSeconds);
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

  /** Stores the results, then marks SUCCESS: a reader who sees SUCCESS always finds the results. */
  async succeed(task: Task, results: TaskResult[]): Promise<void> {
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
  }

  /** The stored results of a finished task. */
  async results(id: string): Promise<TaskResult[] | undefined> {
    return parseResults(await this.kv.get(TaskStore.resultsKey(id)));
  }

  /** Forgets a task (used when it could not be queued). */
  async remove(id: string): Promise<void> {
    await this.kv.del(TaskStore.key(id));
  }
}
