import type { Config } from '../config';
import { EventBus } from '../events';
import type { Deps } from '../types';
import { BROKER_START_WAIT_MS, newBroker } from './broker';
import { createDb, migrateLatest } from './db';
import { createKv, RedisKv } from './kv';
import { createLogger, type Logger } from './logger';
import { MemoryPubSub, RedisPubSub, type PubSub } from './pubsub';
import { createPresence } from './presence';
import { Shutdown } from './shutdown';

export interface BuiltInfra extends Deps {
  shutdown: Shutdown;
}

/** What needs a broker: the search app, and the write-behind storage mode. */
export function needsBroker(config: Config): boolean {
  return config.apps.includes('search') || config.messageStorage === 'rabbitmq';
}

/**
 * Opens every backing service for the configured mode, each registering its
 * own close: the database, the key-value store, the event pub/sub, and the
 * broker when an app needs one. The embedded mode migrates at start (there
 * is no separate migration step for a new user); the services mode expects
 * `messenger-db migrate` to have run. Each close is registered on `shutdown`
 * as soon as its resource exists, so a shutdown during start-up closes what
 * is open so far.
 */
export async function buildInfra(config: Config, log: Logger = createLogger(config.logLevel), shutdown = new Shutdown(log)): Promise<BuiltInfra> {
  const db = await createDb(config, log);
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
  const pubsub: PubSub =
    config.redisUrl === undefined ? new MemoryPubSub() : new RedisPubSub(config.redisUrl, config.redisPrefix, log);
  const events = new EventBus(pubsub, log);
  shutdown.add('events', async () => {
    await events.close();
    await pubsub.close();
  });
  const broker = needsBroker(config) ? newBroker(config, log) : undefined;
  if (broker !== undefined) {
    // Registered before the wait, so a SIGTERM while RabbitMQ is away closes it too.
    shutdown.add('broker', () => broker.close());
    await broker.start(BROKER_START_WAIT_MS);
  }
  return { config, log, db, kv, events, presence: createPresence(kv, config.realtime.presenceTtlSeconds), broker, shutdown };
}
