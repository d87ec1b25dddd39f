/**
 * npx tsx bench/probe.ts [page|<path>]   (npm run bench:probe -- [page|<path>])
 *
 * One route of one app, for comparing two builds or two settings: starts the
 * built app (`dist/`, or PROBE_DIST) in the services mode with two web workers
 * on a database of its own, stores a chat of 100 messages, then loads `page`
 * (that chat's `GET /v1/chats/{id}/messages?limit=100`, the default) or
 * `<path>` (GET, with the account's session) at 32 connections for
 * PROBE_SECONDS (default 10). `list` loads the account's chat list
 * (`GET /v1/chats?limit=100`) after filling it with 1,000 chats and
 * PROBE_LIST_MESSAGES messages (default 1,000,000) as the benchmark does. Prints one JSON line: req/s, p99, CPU time of
 * the two web workers per request (from /proc) and each worker's peak RSS
 * (VmHWM) before and after the load. PROBE_ENV (JSON) adds settings to the
 * app's environment, e.g. '{"APPS":"auth,chats,messages,search"}' for
 * uncached pages or '{"NODE_OPTIONS":"--max-semi-space-size=8"}'.
 * Run it several times, alternating what you compare: the figures move with
 * whatever else the machine does. Drops its database, queues and Redis keys and stops what it started.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import pg from 'pg';
import { fillChatList } from './fill';
import { childPids, cpuTicks, killAll, peakRssMb, start, stop, TICK_MS, waitHttp } from './processes';

const ID = randomBytes(4).toString('hex');
const DB = `messenger_probe_${ID}`;
const PG_ADMIN = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DATABASE_URL = (() => {
  const u = new URL(PG_ADMIN);
  u.pathname = `/${DB}`;
  return u.toString();
})();
const PORT = 18790;
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const RMQ_URL = process.env.BENCH_RMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const SECONDS = Number(process.env.PROBE_SECONDS ?? 10);
const TARGET = process.argv[2] ?? 'page';
const DIST = process.env.PROBE_DIST ?? 'dist';

async function api(method: string, p: string, body: object, session?: string): Promise<Record<string, string>> {
  const r = await fetch(`http://127.0.0.1:${PORT}${p}`, {
    method, body: JSON.stringify(body),
    headers: { 'content-type': 'application/json', ...(session ? { authorization: `session_id ${session}` } : {}) },
  });
  if (r.status >= 300) throw new Error(`${method} ${p} answered ${r.status}`);
  return (await r.json()) as Record<string, string>;
}

async function main(): Promise<void> {
  const admin = new pg.Client({ connectionString: PG_ADMIN });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${DB}`);
  const extra = process.env.PROBE_ENV ? (JSON.parse(process.env.PROBE_ENV) as Record<string, string>) : {};
  try {
    execFileSync(process.execPath, [`${DIST}/messenger/db-cli.js`, 'migrate'], { env: { ...process.env, DATABASE_URL }, stdio: 'ignore' });
    // BENCH_NODE_ARGS: options for the app's node, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" (workers inherit them).
    const app = start([...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean), `${DIST}/messenger/main.js`], {
      DATABASE_URL, REDIS_URL, RMQ_URL,
      REDIS_PREFIX: `probe:${ID}:`, SEARCH_QUEUE: `probe.${ID}.search`, PORT: String(PORT), HOST: '127.0.0.1', WORKERS_NUM: '2',
      LOG_LEVEL: 'warn', BCRYPT_COST: '4', NGINX_THROTTLING: '1', SEARCH_IN_PROCESS_CONSUMER: '0', ...extra,
    });
    try {
      await waitHttp(PORT, '/ping', app);
      await api('POST', '/v1/auth/register', { user_name: 'probe', password: 'correct horse battery' });
      const session = (await api('POST', '/v1/auth/login', { user_name: 'probe', password: 'correct horse battery' })).session_id;
      // Before the probe's own chat, which the fill would otherwise count as one of its chats.
      if (TARGET === 'list') {
        const db = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
        try {
          const account = (await db.query<{ id: string }>(`SELECT id FROM users WHERE user_name = 'probe'`)).rows[0].id;
          await fillChatList(db, account, 'probe', 1000, Number(process.env.PROBE_LIST_MESSAGES ?? 1_000_000));
          await db.query('VACUUM ANALYZE');
        } finally {
          await db.end();
        }
      }
      const chat = (await api('POST', '/v1/chats', { chat_name: 'probe' }, session)).chat_id;
      const member = (await api('POST', `/v1/chats/${chat}/users`, { user_name: 'probe' }, session)).user_id;
      for (let i = 0; i < 100; i++) {
        await api('POST', `/v1/chats/${chat}/messages?user_id=${member}`, { message: `message ${i} about lunch and the deploy ${'x'.repeat(80)}` }, session);
      }
      const paths: Record<string, string> = { page: `/v1/chats/${chat}/messages?limit=100`, list: '/v1/chats?limit=100' };
      const url = `http://127.0.0.1:${PORT}${paths[TARGET] ?? TARGET}`;
      const headers = { authorization: `session_id ${session}` };
      await (await fetch(url, { headers })).text(); // a cached page is cached from here on
      const workers = childPids(app.pid ?? 0);
      const peaks = () => workers.map((pid) => Math.round(peakRssMb(pid)));
      const ticks = () => workers.reduce((sum, pid) => sum + cpuTicks(pid), 0);
      const peakBefore = peaks();
      const ticksBefore = ticks();
      const r = await autocannon({ url, connections: 32, duration: SECONDS, headers });
      const cpuUs = ((ticks() - ticksBefore) * TICK_MS * 1000) / Math.max(1, r.requests.total);
      console.log(JSON.stringify({
        target: TARGET, env: extra, rps: Math.round(r.requests.average), p99: r.latency.p99, non2xx: r.non2xx + r.errors,
        cpuUsPerRequest: Math.round(cpuUs), peakMbBefore: peakBefore, peakMbAfter: peaks(),
      }));
    } finally {
      await stop(app);
    }
  } finally {
    killAll();
    await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
    await admin.end();
    // The app declared its search queues (and dead-letter queue) on the shared RabbitMQ: remove them.
    const conn = await amqp.connect(RMQ_URL);
    const ch = await conn.createChannel();
    for (const q of [`probe.${ID}.search`, `probe.${ID}.search.dead`]) await ch.deleteQueue(q).catch(() => {});
    await conn.close();
    // And its keys on the shared Redis (the chats' cache versions have no expiry).
    const redis = new Redis(REDIS_URL);
    for await (const keys of redis.scanStream({ match: `probe:${ID}:*`, count: 500 }) as AsyncIterable<string[]>) {
      if (keys.length > 0) await redis.del(...keys);
    }
    redis.disconnect();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  killAll();
  process.exit(1);
});
