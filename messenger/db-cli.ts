#!/usr/bin/env node
import { ConfigError, loadConfig, loadEnvFile } from './config';
import { createDb, migrateLatest, migrateRollback } from './infra/db';
import { createLogger } from './infra/logger';

const USAGE = 'usage: messenger-db migrate|rollback';

/** `messenger-db migrate` applies pending migrations; `rollback` undoes the newest applied one. */
async function main(): Promise<number> {
  const command = process.argv[2];
  if (command !== 'migrate' && command !== 'rollback') {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  loadEnvFile();
  const config = loadConfig();
  // knex's own messages go through the JSON logger (a refused connection is a debug line), not raw to stdout with a stack.
  const db = await createDb(config, createLogger(config.logLevel, 'messenger-db'));
  try {
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
    if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
    else process.stderr.write(`messenger-db failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
