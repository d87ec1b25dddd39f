#!/usr/bin/env node
import { ConfigError, loadConfig, loadEnvFile } from './config';
import { createDb, migrateLatest, migrateRollback } from './infra/db';

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
  const db = await createDb(config);
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
