import { randomBytes } from 'node:crypto';
import knexFactory from 'knex';

/** `embedded` (default: PGlite in memory, in-process store) or `services` (real PostgreSQL, Redis, RabbitMQ). */
export const MODE: 'embedded' | 'services' = process.env.TEST_MODE === 'services' ? 'services' : 'embedded';

const PG_ADMIN_URL = process.env.TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const RMQ_URL = process.env.TEST_RMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

/** Unique per test run, so parallel runs share the services without touching each other's data. */
export const RUN_ID = `${process.pid}_${randomBytes(4).toString('hex')}`;
const DB_NAME = `messenger_test_${RUN_ID}`;

export function databaseUrl(): string {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${DB_NAME}`;
  return u.toString();
}

/** The environment a test app is configured from; `overrides` set or (with '') clear settings. */
export function testEnv(overrides: Record<string, string> = {}): Record<string, string> {
  const base: Record<string, string> = {
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    // Cheap hashes keep the suite fast; a test checks the production default (10) separately.
    BCRYPT_COST: '4',
    // Every test logs in from 127.0.0.1; the lockout tests set their own limit
    // and give each client its own forwarded address.
    LOGIN_MAX_FAILURES: '1000',
    // Every test's requests without a session share one allowance (127.0.0.1's),
    // and the limit is a sliding window: a hundred registrations across tests in a
    // second would meet a 429. The throttling tests start apps with their own limit.
    RPS_LIMIT: '100000',
    DATA_DIR: 'memory://',
    // Worker processes serve /health and /metrics; several run at once in some tests.
    METRICS_PORT: '0',
  };
  if (MODE === 'services') {
    base.DATABASE_URL = databaseUrl();
    base.REDIS_URL = REDIS_URL;
    base.REDIS_PREFIX = `test:${RUN_ID}:`;
    base.RMQ_URL = RMQ_URL;
    base.SEARCH_QUEUE = `test.${RUN_ID}.search`;
    // The test apps also consume, through RabbitMQ, with the consumer's own code.
    base.SEARCH_IN_PROCESS_CONSUMER = '1';
  }
  return { ...base, ...overrides };
}

/** Deletes a search queue and its dead-letter queue (services mode). */
export async function deleteQueues(queue: string): Promise<void> {
  const amqp = await import('amqplib');
  const conn = await amqp.connect(RMQ_URL);
  try {
    const ch = await conn.createChannel();
    await ch.deleteQueue(queue);
    await ch.deleteQueue(`${queue}.dead`);
  } finally {
    await conn.close();
  }
}

/** Deletes this run's RabbitMQ queues (services mode). */
export async function deleteTestQueues(): Promise<void> {
  await deleteQueues(`test.${RUN_ID}.search`);
}

/** Deletes this run's Redis keys (services mode): everything under its prefix. */
export async function deleteTestKeys(): Promise<void> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(REDIS_URL, { lazyConnect: true });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `test:${RUN_ID}:*`, 'COUNT', 1000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/** Creates this run's database (services mode); fails loudly when PostgreSQL is unreachable. */
export async function createTestDatabase(): Promise<void> {
  const admin = knexFactory({ client: 'pg', connection: PG_ADMIN_URL, pool: { min: 0, max: 1 } });
  try {
    await admin.raw(`CREATE DATABASE ${DB_NAME}`);
  } finally {
    await admin.destroy();
  }
}

/** Drops this run's database (services mode). */
export async function dropTestDatabase(): Promise<void> {
  const admin = knexFactory({ client: 'pg', connection: PG_ADMIN_URL, pool: { min: 0, max: 1 } });
  try {
    await admin.raw(`DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)`);
  } finally {
    await admin.destroy();
  }
}
