import { randomBytes } from 'node:crypto';
import { BadRequest, NotFound } from '../../errors';
import { parseId, toWireId, ZERO_ID } from '../../ids';
import type { TaskQueue } from '../../infra/queue';
import { sessionOf } from '../auth';
import { charLength, field, intParam, queryParam } from '../input';
import type { App, AppFactory, ApiContext } from '../types';
import { TaskStore, type Task } from './tasks';
import { SearchWorker } from './worker';

/** Shortest phrase worth searching for, in characters (after trimming). */
const MIN_PHRASE = 4;

/**
 * Search: the web side records a task (WAITING) and queues it; a consumer
 * (a separate process, or this one in the embedded mode) runs it.
 */
export const searchApp: AppFactory = ({ config, db, kv, log, queue }): App => {
  const tasks = new TaskStore(kv, config.search.taskTtlSeconds);
  const worker = new SearchWorker(db, tasks, config.search, log.child({ component: 'search' }));
  const q = (): TaskQueue => {
    if (queue === undefined) throw new Error('search app started without a task queue');
    return queue;
  };

  /** The caller's task, or 404 task-not-found (unknown, expired, malformed or not theirs). */
  async function ownTask(ctx: ApiContext, rawId: string | undefined): Promise<Task> {
    const id = parseId(rawId);
    const task = id === null ? undefined : await tasks.get(toWireId(id));
    if (task === undefined || task.owner !== sessionOf(ctx).accountId) throw new NotFound('task-not-found');
    return task;
  }

  return {
    name: 'search',
    requires: ['auth', 'chats', 'messages'],
    middleware: {},
    handlers: {
      async startSearch(ctx, req) {
        const phrase = field(req.body, 'message');
        if (charLength(phrase.trim()) < MIN_PHRASE) throw new BadRequest();
        const id = randomBytes(16).toString('hex');
        await tasks.create(id, sessionOf(ctx).accountId, phrase);
        try {
          await q().publish({ task_id: id });
        } catch (err) {
          // Not queued means it will never run: leave no WAITING task behind.
          await tasks.remove(id).catch(() => {});
          throw err;
        }
        ctx.status = 201;
        ctx.body = { task_id: id };
      },

      async searchStatus(ctx, req) {
        const task = await ownTask(ctx, req.params.task_id);
        ctx.status = 200;
        ctx.body = { status: task.status };
      },

      async searchMessages(ctx, req) {
        const limit = intParam(req.query.limit, 1, 1000);
        const from = queryParam(req.query.from);
        const cursorId = from === undefined ? ZERO_ID : parseId(from);
        if (cursorId === null) throw new BadRequest('bad-cursor');
        const cursor = toWireId(cursorId);
        const task = await ownTask(ctx, req.params.task_id);
        if (task.status === 'FAILED') throw new BadRequest('task-failed');
        if (task.status !== 'SUCCESS') throw new BadRequest('task-not-complete');
        const results = await tasks.results(task.id);
        if (results === undefined) throw new NotFound('task-not-found');
        let start = 0;
        if (cursor !== ZERO_ID) {
          const at = results.findIndex((r) => r.message_id === cursor);
          if (at < 0) throw new BadRequest('bad-cursor');
          start = at + 1;
        }
        const page = results.slice(start, start + limit);
        ctx.status = 200;
        ctx.body = { messages: page, next: { iterator: page.at(-1)?.message_id ?? cursor } };
      },
    },

    async start() {
      if (config.search.inProcessConsumer) await q().consume(worker.handle, config.search.prefetch);
    },

    async stop() {
      if (config.search.inProcessConsumer) await q().stopConsuming();
    },
  };
};

export { SearchWorker, TaskStore };
