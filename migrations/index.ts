import type { Knex } from 'knex';
import * as m001 from './001_core';
import * as m002 from './002_search';
import * as m003 from './003_conversations';
import * as m004 from './004_sessions';
import * as m005 from './005_write_path';
import * as m006 from './006_name_keys';
import * as m007 from './007_chat_list';
import * as m008 from './008_search_pending_list';
import * as m009 from './009_fts_pending_list';
import * as m010 from './010_pending_list_room';
import * as m011 from './011_chat_last_message';
import * as m012 from './012_chat_last_message_json';
import * as m013 from './013_name_prefix_key';

interface Migration {
  up: (knex: Knex) => Promise<void>;
  down: (knex: Knex) => Promise<void>;
}

// Listed in order rather than read from a folder, so the same list works from
// TypeScript sources (tests) and compiled JavaScript (production image).
const migrations: Record<string, Migration> = {
  '001_core': m001,
  '002_search': m002,
  '003_conversations': m003,
  '004_sessions': m004,
  '005_write_path': m005,
  '006_name_keys': m006,
  '007_chat_list': m007,
  '008_search_pending_list': m008,
  '009_fts_pending_list': m009,
  '010_pending_list_room': m010,
  '011_chat_last_message': m011,
  '012_chat_last_message_json': m012,
  '013_name_prefix_key': m013,
};

/** Knex migration source over the static list above. */
export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name],
};
