import type { Config } from '../config';
import type { Infra } from '../apps/types';
import { createDb, migrateLatest } from './db';
import { createKv, RedisKv } from './kv';
import { createLogger, type Logger } from './logger';
import { createQueue } from './queue';
import { Shutdown } from './shutdown';

export interface BuiltInfra extends Infra {
  shutdown: Shutdown;
}

/**
 * Opens the database and key-value store for the configured mode and
 * registers their close. The embedded mode migrates at start (there is no
 * separate migration step for a new user); the services mode expects
 * `messenger-db migrate` to have run.
 */
export async function buildInfra(config: Config, log: Logger = createLogger(config.logLevel)): Promise<BuiltInfra> {
  const shutdown = new Shutdown(log);
  const db = await createDb(config);
  shutdown.add('database', () => db.destroy());
  if (config.databaseUrl === undefined) {
    const applied = await migrateLatest(db);
    if (applied.length > 0) log.info({ applied, dataDir: config.dataDir }, 'embedded database migrated');
  }
  const kv = createKv(config, log);
  shutdown.add('kv', () => kv.close());
  if (kv instanceof RedisKv && !(await kv.waitReady(5000))) {
    log.warn('redis not reachable yet; requests needing it answer 503 until it is');
  }
  // Only the search app queues anything; without it no broker connection is made.
  const queue = config.apps.includes('search') ? await createQueue(config, log) : undefined;
  if (queue !== undefined) shutdown.add('queue', () => queue.close());
  return { config, log, db, kv, queue, shutdown };
}
