#!/usr/bin/env node
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig, loadEnvFile, type Config } from './config';
import { createDb, dbFailureHint, migrateLatest, migrateRollback, migrationNames, pendingMigrations } from './infra/db';
import { CannotStart } from './infra/errors';
import { createLogger } from './infra/logger';

const USAGE = 'usage: messenger-db migrate|rollback|status';

let config: Config | undefined;

/**
 * Whether the embedded DATA_DIR holds a database (PGlite writes PG_VERSION at
 * its initdb), or is something that must be opened to be judged (a file).
 */
function embeddedDatabaseExists(dataDir: string): boolean {
  if (dataDir === 'memory://' || dataDir === ':memory:') return true;
  if (!fs.existsSync(dataDir)) return false;
  return !fs.statSync(dataDir).isDirectory() || fs.existsSync(path.join(dataDir, 'PG_VERSION'));
}

/**
 * `messenger-db migrate` applies pending migrations; `rollback` undoes the
 * newest applied one; `status` lists each migration of this build as applied
 * or pending, writing nothing.
 */
async function main(): Promise<number> {
  const command = process.argv[2];
  // No command takes arguments: `rollback 3` or `rollback all` would undo one migration, not what was asked.
  if ((command !== 'migrate' && command !== 'rollback' && command !== 'status') || process.argv.length > 3) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  loadEnvFile();
  config = loadConfig();
  if (command === 'status' && config.databaseUrl === undefined && !embeddedDatabaseExists(config.dataDir)) {
    // Opening it would create it (PGlite's initdb, some 20 MB) just to say that nothing is applied.
    const names = await migrationNames();
    for (const name of names) process.stdout.write(`pending  ${name}\n`);
    process.stdout.write(`${names.length} pending: run messenger-db migrate (no database in ${config.dataDir} yet)\n`);
    return 0;
  }
  // knex's own messages go through the JSON logger (a refused connection is a debug line), not raw to stdout with a stack.
  const db = await createDb(config, createLogger(config.logLevel, 'messenger-db'));
  try {
    if (command === 'status') {
      const pending = new Set(await pendingMigrations(db));
      for (const name of await migrationNames()) process.stdout.write(`${pending.has(name) ? 'pending' : 'applied'}  ${name}\n`);
      process.stdout.write(pending.size === 0 ? 'up to date\n' : `${pending.size} pending: run messenger-db migrate\n`);
      return 0;
    }
    const names = command === 'migrate' ? await migrateLatest(db) : await migrateRollback(db);
    const verb = command === 'migrate' ? 'applied' : 'rolled back';
    process.stdout.write(names.length === 0 ? `nothing to do\n` : `${verb}: ${names.join(', ')}\n`);
    return 0;
  } finally {
    await db.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConfigError) {
      // A setting that cannot work, as in every other entrypoint.
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    if (err instanceof CannotStart) {
      // An embedded DATA_DIR in use by another process: exit 2, as messenger-api does.
      process.stderr.write(`messenger-db cannot start: ${err.message}\n`);
      process.exit(2);
    }
    const hint = dbFailureHint(err, config);
    process.stderr.write(`messenger-db failed: ${err instanceof Error ? err.message : String(err)}${hint === undefined ? '' : `: ${hint}`}\n`);
    process.exit(1);
  },
);
