/**
 * npx tsx bench/search-typos.ts <database-url> [runs] [other-tree]
 *
 * Times what a search task asks of PostgreSQL (the exact query, then the near
 * matches excluding the exact ones, as the worker runs them, with
 * SEARCH_TIMEOUT_MS 5000) for phrases with swapped letters and their correct
 * spellings, `runs` times each (default 5, after one warm-up), and prints the
 * medians. With `other-tree` (a checkout, e.g. a git worktree of the build
 * before) it alternates the two builds' `messenger/db/search.ts` run by run.
 *
 * The database must be migrated (`DATABASE_URL=<url> node dist/messenger/db-cli.js migrate`);
 * when it has no messages, this fills it first: 240,000 messages of 6 to 14
 * words drawn from about 420 common words, in 60 chats of 4,000, of which the
 * searching account has joined 40 (160,000 messages), then VACUUM ANALYZE.
 * Drop the database afterwards; nothing else is touched.
 */
import path from 'node:path';
import knexFactory from 'knex';
import * as here from '../messenger/db/search';

type SearchModule = Pick<typeof here, 'searchExact' | 'searchFuzzy'>;

const ACCOUNT = '00000000-0000-7000-8000-000000000001';
const OTHER = '00000000-0000-7000-8000-000000000002';
const PHRASES = ['mnago', 'mango', 'hlelo wrold', 'hello world', 'qaurterly reveiw', 'quarterly review', 'meeting tomorrow', 'databse migration', 'release notes deploy'];

const WORDS = `the be to of and a in that have it for not on with he as you do at this but his by from they we say her she or an will my one all
would there their what so up out if about who get which go me when make can like time no just him know take people into year your good some could
them see other than then now look only come its over think also back after use two how our work first well way even new want because any these give
day most us hello world mango meeting release notes database migration server deploy tomorrow today morning evening lunch dinner coffee please thanks
sorry great awesome project review merge branch commit test failed passed build pipeline weekend holiday vacation office remote call video audio screen
share document report budget sales market customer support ticket issue problem solution answer question friend family music movie game play football
weather rain sunny cold warm summer winter spring autumn city travel flight train hotel booking price money bank card payment invoice order delivery
package shipping address phone email message chat group channel photo picture image file folder upload download password account login logout security
update version feature design layout color button page website mobile android iphone laptop computer keyboard mouse monitor printer network internet
wifi cable router birthday party dinner kitchen recipe chicken pasta pizza salad apple banana orange cherry lemon water juice beer wine tea bread cheese
butter sugar salt pepper garden flower tree river mountain beach ocean island forest animal dog cat horse bird fish school teacher student class lesson
exam homework university library book story paper pen letter news article blog post comment reply thread forum question answer sprint standup retro
planning estimate deadline schedule calendar event invite reminder alarm clock hour minute second week month quarterly annual yearly daily weekly monthly`;

async function fill(knex: knexFactory.Knex): Promise<void> {
  // One transaction, so the seed and the random words are of one session: the same data every time.
  await knex.transaction((db) => fillWith(db));
  await knex.raw('VACUUM ANALYZE');
}

async function fillWith(db: knexFactory.Knex.Transaction): Promise<void> {
  await db.raw('SELECT setseed(0.42)');
  await db.raw(`INSERT INTO users (id, user_name, password_hash) VALUES (?, 'searcher', 'x'), (?, 'other', 'x')`, [ACCOUNT, OTHER]);
  await db.raw(`INSERT INTO chats (chat_name, owner_id) SELECT 'chat ' || g, ? FROM generate_series(1, 60) g`, [ACCOUNT]);
  await db.raw(
    `INSERT INTO chat_members (chat_id, user_name, account_id)
     SELECT id, 'searcher', ?::uuid FROM (SELECT id, row_number() OVER (ORDER BY chat_name) r FROM chats) c WHERE r <= 40
     UNION ALL SELECT id, 'other', ?::uuid FROM chats`,
    [ACCOUNT, OTHER],
  );
  await db.raw(
    `INSERT INTO messages (chat_id, member_id, seq, text, created_at)
     SELECT cm.chat_id, cm.id, s,
            (SELECT string_agg(v.w[1 + floor(random() * array_length(v.w, 1))::int], ' ')
               FROM (SELECT regexp_split_to_array(?, '\\s+') AS w) v, generate_series(1, 6 + (s * 7 + length(cm.chat_id::text)) % 9) k
              WHERE s > 0),
            now() - interval '30 days' + (s * 60 + (abs(hashtext(cm.chat_id::text)) % 60)) * interval '1 second'
       FROM chat_members cm CROSS JOIN generate_series(1, 4000) s
      WHERE cm.user_name = 'other'`,
    [WORDS],
  );
  await db.raw('UPDATE chats SET last_seq = 4000, last_seq_at = now()');
}

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main(): Promise<void> {
  const [url, runsArg, otherTree] = process.argv.slice(2);
  if (url === undefined) throw new Error('usage: npx tsx bench/search-typos.ts <database-url> [runs] [other-tree]');
  const runs = Number(runsArg ?? 5);
  const builds: [string, SearchModule][] = [['this build', here]];
  if (otherTree !== undefined) builds.unshift([otherTree, (await import(path.resolve(otherTree, 'messenger/db/search.ts'))) as SearchModule]);
  const db = knexFactory({ client: 'pg', connection: url, pool: { min: 1, max: 2 } });
  try {
    const stored = Number(((await db.raw('SELECT count(*) AS n FROM messages')) as { rows: { n: string }[] }).rows[0].n);
    if (stored === 0) await fill(db);
    const times = new Map<string, number[]>();
    const found = new Map<string, string>();
    for (let run = -1; run < runs; run++) {
      for (const phrase of PHRASES) {
        for (const [name, mod] of run % 2 === 0 ? builds : [...builds].reverse()) {
          const started = process.hrtime.bigint();
          const exact = await mod.searchExact(db, ACCOUNT, phrase, 100, 5000);
          const near = await mod.searchFuzzy(db, ACCOUNT, phrase, exact.map((m) => m.id), 100 - exact.length, 5000);
          const ms = Number(process.hrtime.bigint() - started) / 1e6;
          if (run < 0) continue;
          const key = `${phrase}\t${name}`;
          times.set(key, [...(times.get(key) ?? []), ms]);
          found.set(key, `${exact.length}+${near.length}`);
        }
      }
    }
    console.log(`${stored === 0 ? 'filled' : 'reused'} ${url.replace(/\/\/[^@]*@/, '//')}; medians of ${runs} runs (ms), results exact+near`);
    console.log(`| phrase | ${builds.map(([n]) => `${n}: results | median ms (runs)`).join(' | ')} |`);
    for (const phrase of PHRASES) {
      const cells = builds.map(([n]) => {
        const t = times.get(`${phrase}\t${n}`) ?? [];
        return `${found.get(`${phrase}\t${n}`)} | ${median(t).toFixed(0)} (${t.map((x) => x.toFixed(0)).join(', ')})`;
      });
      console.log(`| ${phrase} | ${cells.join(' | ')} |`);
    }
  } finally {
    await db.destroy();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
