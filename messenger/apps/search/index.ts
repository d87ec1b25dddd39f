import { randomBytes } from 'node:crypto';
import { BadRequest, NotFound, TooManyRequests } from '../../errors';
import { parseId, toWireId, ZERO_ID } from '../../ids';
import type { Broker } from '../../infra/broker';
import { sessionOf } from '../auth';
import { charLength, intParam, queryParam } from '../input';
import type { App, AppFactory, ApiContext, AppModule, Deps } from '../../types';
import { foundMessages, type FoundMessage } from '../../db/search';
import { TaskStore, type Task, type TaskResult } from './tasks';
import { SearchWorker } from './worker';

/** A found message in the wire form of a search result. */
function present(m: FoundMessage): TaskResult {
  return {
    message_id: toWireId(m.id),
    chat_id: toWireId(m.chat_id),
    user_id: toWireId(m.member_id),
    user_name: m.user_name,
    text: m.text,
    created_at: m.created_at.toISOString(),
  };
}

/** Shortest phrase worth searching for, in characters (after trimming). */
const MIN_PHRASE = 4;

/**
 * Search: the web side records a task (WAITING) and queues it; a consumer
 * (a separate process, or this one in the embedded mode) runs it.
 */
const searchApp: AppFactory = (deps): App => {
  const { config, kv } = deps;
  const tasks = new TaskStore(kv, config.search.taskTtlSeconds);
  const broker = brokerOf(deps);
  const consumer = searchConsumer(deps);

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
        const phrase = req.body.message;
        if (charLength(phrase.trim()) < MIN_PHRASE) throw new BadRequest();
        const id = randomBytes(16).toString('hex');
        const task = await tasks.createWithin(id, sessionOf(ctx).accountId, phrase, config.search.maxUnfinished);
        // A task runs for at most SEARCH_TIMEOUT_MS once a consumer takes it.
        if (task === undefined) throw new TooManyRequests('too-many-searches', config.search.timeoutMs / 1000);
        try {
          await broker.publish(config.search.queue, { task_id: id });
        } catch (err) {
          // Not queued means it will never run: leave no WAITING task behind.
          await tasks.remove(task).catch(() => {});
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
        const limit = intParam('limit', req.query.limit, 1, 1000);
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
          const at = results.indexOf(cursor);
          if (at < 0) throw new BadRequest('bad-cursor');
          start = at + 1;
        }
        // The task keeps the ids; the messages are read for the page (they never change once stored).
        const ids = results.slice(start, start + limit);
        const page = (await foundMessages(deps.db, ids.map((id) => parseId(id) as string))).map(present);
        ctx.status = 200;
        ctx.body = { messages: page, next: { iterator: ids.at(-1) ?? cursor } };
      },
    },

    // In the embedded mode (or when told to) the web process runs the search worker role itself.
    async start() {
      await broker.declare(config.search.queue);
      if (config.search.inProcessConsumer) await consumer.start();
    },

    async stop() {
      if (config.search.inProcessConsumer) await consumer.stop();
    },
  };
};

function brokerOf(deps: Deps): Broker {
  if (deps.broker === undefined) throw new Error('the search app needs a broker');
  return deps.broker;
}

/**
 * The search worker: consumes the search queue and runs each task. Started by
 * the `search-worker` service role (messenger-run-task-consumer), or inside
 * the web process by the search app in the embedded mode: the same code.
 * `start` registers the consumer (it attaches whenever RabbitMQ is
 * reachable); `consuming` resolves true once it is attached, false when the
 * broker closed first.
 */
export function searchConsumer(deps: Deps): { start(): Promise<void>; consuming(): Promise<boolean>; stop(): Promise<void> } {
  const { config, db, kv } = deps;
  const log = deps.log.child({ component: 'search' });
  const worker = new SearchWorker(db, new TaskStore(kv, config.search.taskTtlSeconds), config.search, log);
  const consuming = () => brokerOf(deps).attached(config.search.queue);
  return {
    async start() {
      await brokerOf(deps).declare(config.search.queue);
      await brokerOf(deps).consume(config.search.queue, worker.handle, config.search.prefetch);
      void consuming().then((ok) => ok && log.info({ queue: config.search.queue, prefetch: config.search.prefetch }, 'search worker consuming'));
    },
    consuming,
    stop: () => brokerOf(deps).stopConsuming(),
  };
}

export { SearchWorker, TaskStore };

/** The search app. */
export const app: AppModule = { name: 'search', create: searchApp };
