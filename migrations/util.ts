import type { Knex } from 'knex';

/**
 * Runs a script one statement at a time: PGlite (like any prepared-statement
 * path) refuses several commands in one query. Statements are split on a
 * semicolon at the end of a line, so none may end a line inside a literal.
 */
export async function runStatements(knex: Knex, script: string): Promise<void> {
  const statements = script
    .split(/;\s*$/m)
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s.length > 0);
  for (const sql of statements) await knex.raw(sql);
}
