#!/usr/bin/env node
import { loadConfigOrExit, type Config } from './config';
import { createDb } from './infra/db';
import { RedisKv } from './infra/kv';
import { createLogger } from './infra/logger';
import { RabbitQueue } from './infra/queue';
import { Shutdown } from './infra/shutdown';
import { SearchWorker, TaskStore } from './apps/search';

/** Why this process cannot run with these settings, if it cannot. */
function problems(config: Config): string[] {
  const out: string[] = [];
  if (config.rmqUrl === undefined) out.push('RMQ_URL is not set (in the embedded mode, search runs inside messenger-api)');
  if (config.databaseUrl === undefined) out.push('DATABASE_URL is not set (a separate consumer needs the shared PostgreSQL)');
  if (config.redisUrl === undefined) out.push('REDIS_URL is not set (task state and results live in the shared Redis)');
  return out;
}

/**
 * messenger-run-task-consumer: takes search tasks from RabbitMQ, runs them
 * against PostgreSQL and stores the outcome in Redis. SIGTERM finishes the
 * tasks in hand, then closes RabbitMQ, Redis and PostgreSQL in that order.
 */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const bad = problems(config);
  if (bad.length > 0) {
    process.stderr.write(`messenger-run-task-consumer cannot start:\n  - ${bad.join('\n  - ')}\n`);
    process.exit(2);
  }
  const log = createLogger(config.logLevel, 'messenger-consumer');
  const shutdown = new Shutdown(log);
  const db = await createDb(config);
  shutdown.add('database', () => db.destroy());
  const kv = new RedisKv(config.redisUrl as string, config.redisPrefix, log);
  shutdown.add('redis', () => kv.close());
  const queue = new RabbitQueue(config.rmqUrl as string, config.search.queue, log);
  shutdown.add('rabbitmq', () => queue.close());
  const worker = new SearchWorker(db, new TaskStore(kv, config.search.taskTtlSeconds), config.search, log);
  await kv.waitReady(5000);
  await queue.start(5000);
  await queue.consume(worker.handle, config.search.prefetch);
  shutdown.add('consumer', () => queue.stopConsuming());
  shutdown.onSignals(config.shutdownTimeoutMs);
  log.info({ queue: config.search.queue, prefetch: config.search.prefetch }, 'messenger-run-task-consumer started');
}

main().catch((err: unknown) => {
  process.stderr.write(`messenger-run-task-consumer failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
