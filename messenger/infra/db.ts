import fs from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import type { Config } from '../config';
import { migrationSource } from '../../migrations';

export type Db = Knex;

/** A transaction or the pool: repositories take either (`trx ?? db`). */
export type Queryable = Knex | Knex.Transaction;

/**
 * Query options making a hot statement a named prepared statement: each pool
 * connection parses and plans it once instead of on every call (planning the
 * page query cost more than running it). PGlite ignores the name.
 */
export function prepared(name: string): { name: string } {
  return { name };
}

async function createPglite(dataDir: string): Promise<Knex> {
  // Loaded lazily so the services mode never pays for the WebAssembly build.
  const { PGlite } = await import('@electric-sql/pglite');
  const { pg_trgm } = await import('@electric-sql/pglite/contrib/pg_trgm');
  const ClientPgLite = (await import('knex-pglite')).default;
  const inMemory = dataDir === 'memory://' || dataDir === ':memory:';
  if (!inMemory) fs.mkdirSync(path.resolve(dataDir), { recursive: true });
  const pglite = await PGlite.create(inMemory ? undefined : path.resolve(dataDir), { extensions: { pg_trgm } });
  return knexFactory({
    client: ClientPgLite,
    dialect: 'postgres',
    connection: () => ({ pglite }) as object,
  } as Knex.Config);
}

/** Opens the relational store: PostgreSQL when DATABASE_URL is set, else PGlite on disk. */
export async function createDb(config: Config): Promise<Db> {
  if (config.databaseUrl === undefined) return createPglite(config.dataDir);
  return knexFactory({
    client: 'pg',
    connection: {
      connectionString: config.databaseUrl,
      connectionTimeoutMillis: config.dbTimeoutMs,
      // A query that hangs (a stalled server) fails instead of holding a request forever.
      query_timeout: Math.max(config.dbTimeoutMs * 3, 10_000),
      application_name: 'messenger',
    },
    pool: { min: 0, max: config.poolSize },
    acquireConnectionTimeout: config.dbTimeoutMs,
  });
}

/** Applies every pending migration; returns the names applied. */
export async function migrateLatest(db: Db): Promise<string[]> {
  const [, applied] = (await db.migrate.latest({ migrationSource })) as [number, string[]];
  return applied;
}

/** Rolls back the last batch of migrations; returns the names rolled back. */
export async function migrateRollback(db: Db): Promise<string[]> {
  const [, rolled] = (await db.migrate.rollback({ migrationSource })) as [number, string[]];
  return rolled;
}

/** True when the database answers a trivial query. */
export async function pingDb(db: Db): Promise<void> {
  await db.raw('select 1');
}
