import fs from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import type { Config } from '../config';
import type { Logger } from './logger';
import { migrationSource } from '../../migrations';
import { CannotStart } from './errors';

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

/** The file in an embedded data directory naming the process that has it open. */
export const DATA_DIR_LOCK = 'messenger.pid';

/** Whether a Node.js process with this id runs (a recycled id of another program does not count). */
function nodeRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it runs, under another user.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // Linux: a container restarted on its volume reuses small ids for other programs (an init).
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('node');
  } catch {
    return true;
  }
}

/**
 * Takes the embedded data directory for this process, as PostgreSQL's
 * postmaster.pid does: PGlite keeps no lock of its own, and two processes
 * on one directory each work on their own copy of the database in memory
 * and overwrite each other's files, so what one of them acknowledged is
 * lost. A lock left by a process that no longer runs is taken over.
 * Returns the release.
 */
function lockDataDir(dir: string): () => void {
  const file = path.join(dir, DATA_DIR_LOCK);
  for (;;) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number.parseInt(fs.readFileSync(file, 'utf8'), 10);
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && nodeRuns(holder)) {
      throw new CannotStart(
        `DATA_DIR ${dir} is in use by another process (pid ${holder}): stop it, or set another DATA_DIR; if no such process runs, delete ${file}`,
      );
    }
    fs.rmSync(file, { force: true });
  }
  const release = () => {
    process.removeListener('exit', release);
    try {
      if (Number.parseInt(fs.readFileSync(file, 'utf8'), 10) === process.pid) fs.rmSync(file, { force: true });
    } catch {
      // Already gone.
    }
  };
  // Also on a forced exit (the shutdown timer), so the next start does not find it.
  process.on('exit', release);
  return release;
}

/**
 * Creates (when missing) and locks the embedded data directory; one that
 * cannot be used is a setting that cannot work (exit 2, one line naming
 * it), not node's "EEXIST: file already exists, mkdir" with exit 1.
 */
function takeDataDir(dir: string): () => void {
  const code = (err: unknown) => (err as NodeJS.ErrnoException).code ?? String(err);
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new CannotStart(`DATA_DIR ${dir} is not a directory`);
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new CannotStart(`DATA_DIR ${dir} cannot be created (${code(err)}): create it, or set DATA_DIR to a writable directory`);
  }
  try {
    return lockDataDir(dir);
  } catch (err) {
    if (err instanceof CannotStart) throw err;
    throw new CannotStart(notWritable(dir, code(err)));
  }
}

function notWritable(dir: string, code: string): string {
  return `DATA_DIR ${dir} is not writable (${code}): the embedded database writes there; set DATA_DIR to a writable directory, or memory:// to keep nothing`;
}

async function createPglite(dataDir: string): Promise<Knex> {
  // Loaded lazily so the services mode never pays for the WebAssembly build.
  const { PGlite } = await import('@electric-sql/pglite');
  const { pg_trgm } = await import('@electric-sql/pglite/contrib/pg_trgm');
  const ClientPgLite = (await import('knex-pglite')).default;
  const inMemory = dataDir === 'memory://' || dataDir === ':memory:';
  let release = () => {};
  if (!inMemory) release = takeDataDir(path.resolve(dataDir));
  let pglite;
  try {
    pglite = await PGlite.create(inMemory ? undefined : path.resolve(dataDir), { extensions: { pg_trgm } });
  } catch (err) {
    release();
    // PGlite's file system errors are objects without a message ("failed: [object Object]").
    if (err instanceof Error && err.message !== '' && err.message !== undefined) throw err;
    const errno = (err as { errno?: unknown } | null)?.errno;
    // WASI numbers: PGlite checks the mode bits itself, so a read-only directory fails here even for root.
    const denied = ({ 2: 'EACCES', 63: 'EPERM', 69: 'EROFS' } as Record<number, string>)[typeof errno === 'number' ? errno : -1];
    if (denied !== undefined) throw new CannotStart(notWritable(path.resolve(dataDir), denied));
    throw new CannotStart(
      `DATA_DIR ${path.resolve(dataDir)} cannot be opened as an embedded database${typeof errno === 'number' ? ` (errno ${errno})` : ''}: set DATA_DIR to an empty directory or one this service made`,
    );
  }
  const knex = knexFactory({
    client: ClientPgLite,
    dialect: 'postgres',
    connection: () => ({ pglite }) as object,
  } as Knex.Config);
  // The directory is free again once the database is closed (the database's close at shutdown).
  const client = knex.client as { destroy: (callback?: unknown) => Promise<void> };
  const destroy = client.destroy.bind(client);
  client.destroy = async (callback) => {
    try {
      await destroy(callback);
      // The pool closes PGlite only when it had opened its connection.
      if (!pglite.closed) await pglite.close();
    } finally {
      release();
    }
  };
  return knex;
}

/**
 * knex's own messages, into the process's JSON log instead of plain text on
 * stderr. A failed connection attempt (knex prints it with its stack, once per
 * request while PostgreSQL is away) is only a debug line: the request that met
 * it already logs the outage.
 */
function knexLog(log: Logger | undefined): Knex.Config['log'] {
  if (log === undefined) return undefined;
  const text = (m: unknown) => (typeof m === 'string' ? m.split('\n')[0] : m);
  return {
    warn: (m: unknown) => {
      if (typeof m === 'string' && m.startsWith('Acquire connection error')) log.debug({ knex: text(m) }, 'knex');
      else log.warn({ knex: text(m) }, 'knex');
    },
    error: (m: unknown) => log.error({ knex: text(m) }, 'knex'),
    deprecate: (m: unknown) => log.warn({ knex: text(m) }, 'knex'),
    debug: (m: unknown) => log.debug({ knex: text(m) }, 'knex'),
  };
}

/** Opens the relational store: PostgreSQL when DATABASE_URL is set, else PGlite on disk. */
export async function createDb(config: Config, log?: Logger): Promise<Db> {
  if (config.databaseUrl === undefined) return createPglite(config.dataDir);
  return knexFactory({
    log: knexLog(log),
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

/**
 * Rolls back the newest applied migration only; returns its name (none when
 * nothing is applied). Not knex's batch: a deployment migrated in one go has
 * every migration in one batch, and undoing it dropped every table.
 */
export async function migrateRollback(db: Db): Promise<string[]> {
  const [, rolled] = (await db.migrate.down({ migrationSource })) as [number, string[]];
  return rolled;
}

/** The names of this build's migrations, oldest first. */
export async function migrationNames(): Promise<string[]> {
  return migrationSource.getMigrations([]);
}

/**
 * The migrations of this build that the database lacks, read without
 * writing anything (knex's own listing creates its tables).
 */
export async function pendingMigrations(db: Db): Promise<string[]> {
  const known = await migrationSource.getMigrations([]);
  const table = (await db.raw("select to_regclass('knex_migrations') is not null as present")) as { rows: { present: boolean }[] };
  const applied = new Set<string>(table.rows[0]?.present === true ? await db('knex_migrations').pluck('name') : []);
  return known.filter((name) => !applied.has(name));
}

/** True when the database answers a trivial query. */
export async function pingDb(db: Db): Promise<void> {
  await db.raw('select 1');
}

/** What to do about a database that could not be used, when the error says (appended to its message). */
export function dbFailureHint(err: unknown, config: Pick<Config, 'databaseUrl'> | undefined): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = (err as { code?: unknown }).code;
  let where = 'the database';
  let name = 'messenger';
  if (config?.databaseUrl !== undefined) {
    try {
      const u = new URL(config.databaseUrl);
      where = `PostgreSQL at ${u.hostname}:${u.port || '5432'}`;
      name = decodeURIComponent(u.pathname.slice(1)) || name;
    } catch {
      // An unparsable URL says nothing more.
    }
  }
  if (code === '3D000') return `create the database first (createdb ${name}, or CREATE DATABASE), then run messenger-db migrate`;
  if (typeof code === 'string' && code.startsWith('28')) return 'check the user name and password in DATABASE_URL (or POSTGRES_USER, POSTGRES_PASSWORD)';
  if (typeof code === 'string' && ['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ETIMEDOUT'].includes(code)) {
    return `is ${where} running and reachable? Start it, or set DATABASE_URL to where it runs`;
  }
  return undefined;
}
