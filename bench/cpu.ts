/**
 * npm run bench:cpu -- [db_direct|rabbitmq|no_storage] [requests]
 *
 * CPU time per POST message into one chat (BENCH_CPU_CHATS=<n>: round-robin into n chats), by process: the web processes
 * (master and workers), the synchronizer (rabbitmq mode) and the PostgreSQL
 * backends serving this benchmark's database. Requests per second depend on
 * whatever else the machine is doing; CPU time per request much less, so
 * this is the figure to compare two builds by on a shared machine (run each
 * twice; docs/performance.md). Redis and RabbitMQ are shared servers whose
 * time cannot be told apart per client, so they are not in `total`; their
 * whole CPU time per request is printed apart
 * (`sharedServersCpuMicrosPerRequest`: true only while nothing else uses
 * them, as for `callsPerRequest`). Also
 * prints the web workers' peak RSS. BENCH_CPU_CONNECTIONS and BENCH_CPU_TEXT
 * change the load: e.g. one poster of 5,000-character messages.
 *
 * `callsPerRequest` counts round trips, which the noise of a shared machine
 * does not move: each Redis command (INFO commandstats of the whole server
 * before and after, so nothing else may use that Redis meanwhile; commands
 * a script runs count too: the cache bump is an EVALSHA and its INCRBY) and
 * the transactions of the benchmark's PostgreSQL database
 * (pg_stat_database), per request.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import amqp from 'amqplib';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import pg from 'pg';
import { childPids, cpuTicks, killAll, peakRssMb, start, stop, TICK_MS, waitHttp } from './processes';

const ROOT = path.resolve(__dirname, '..');

/**
 * The local Redis and RabbitMQ servers (by process name): their CPU time per
 * request is printed apart from the processes of this benchmark, as the
 * whole server's, so it holds only while nothing else uses them (as for
 * `callsPerRequest`).
 */
function sharedServers(): { name: string; pid: number }[] {
  const found: { name: string; pid: number }[] = [];
  for (const [name, pattern] of [['redis', 'redis-server'], ['rabbitmq', 'beam.smp']]) {
    try {
      for (const pid of execFileSync('pgrep', ['-x', pattern], { encoding: 'utf8' }).trim().split('\n')) found.push({ name, pid: Number(pid) });
    } catch {
      // pgrep answers 1 when nothing matches: that server runs elsewhere and is not counted.
    }
  }
  return found;
}
const MODE = process.argv[2] ?? 'db_direct';
const REQUESTS = Number(process.argv[3] ?? 20_000);
const ID = randomBytes(4).toString('hex');
const PG_ADMIN = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DB_NAME = `messenger_bench_${ID}`;
const DATABASE_URL = PG_ADMIN.replace(/\/[^/]*$/, `/${DB_NAME}`);
const PORT = 18791;
/** BENCH_CPU_CONNECTIONS (default 32): concurrent posters. BENCH_CPU_TEXT=<n>: messages of n characters instead of an ordinary one. */
const CONNECTIONS = Number(process.env.BENCH_CPU_CONNECTIONS ?? 32);
const TEXT = process.env.BENCH_CPU_TEXT
  ? 'x'.repeat(Number(process.env.BENCH_CPU_TEXT))
  : 'a benchmark message of ordinary length, about forty-eight characters';

if (!['db_direct', 'rabbitmq', 'no_storage'].includes(MODE) || !(REQUESTS > 0)) {
  process.stderr.write('usage: bench/cpu.ts [db_direct|rabbitmq|no_storage] [requests]\n');
  process.exit(2);
}

const env = (extra: Record<string, string> = {}): Record<string, string> => ({
  DATABASE_URL, REDIS_URL: process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379', RMQ_URL: process.env.BENCH_RMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
  REDIS_PREFIX: `bench:${ID}:`, SEARCH_QUEUE: `bench.${ID}.search`, SYNC_QUEUE: `bench.${ID}.sync`, PORT: String(PORT), HOST: '127.0.0.1',
  WORKERS_NUM: '2', LOG_LEVEL: 'warn', NGINX_THROTTLING: '1', SEARCH_IN_PROCESS_CONSUMER: '0', POOL_SIZE: '10',
  MESSAGE_STORAGE_TYPE: MODE, SYNC_IN_PROCESS: '0', BCRYPT_COST: '4',
  ...(process.env.BENCH_INDEX_CLEAN_MS ? { INDEX_CLEAN_MS: process.env.BENCH_INDEX_CLEAN_MS } : {}), ...extra,
});


async function api(method: string, p: string, body: object, session?: string): Promise<Record<string, unknown>> {
  const r = await fetch(`http://127.0.0.1:${PORT}${p}`, {
    method, body: JSON.stringify(body),
    headers: { 'content-type': 'application/json', ...(session ? { authorization: `session_id ${session}` } : {}) },
  });
  if (r.status >= 300) throw new Error(`${method} ${p} answered ${r.status}: ${await r.text()}`);
  return (await r.json()) as Record<string, unknown>;
}

/** Calls so far: `redis <command>` from INFO commandstats, `postgres transactions` of the benchmark's database. */
async function roundTrips(redis: Redis, admin: pg.Client): Promise<Map<string, number>> {
  const calls = new Map<string, number>();
  for (const m of (await redis.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(`redis ${m[1]}`, Number(m[2]));
  await admin.query('SELECT pg_stat_clear_snapshot()');
  const row = (await admin.query('SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = $1', [DB_NAME])).rows[0] as { n: string };
  calls.set('postgres transactions', Number(row.n));
  return calls;
}

async function main(): Promise<void> {
  execFileSync('npm', ['run', '-s', 'build'], { cwd: ROOT, stdio: 'ignore' });
  const admin = new pg.Client({ connectionString: PG_ADMIN });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${DB_NAME}`);
  execFileSync(process.execPath, ['dist/messenger/db-cli.js', 'migrate'], { cwd: ROOT, env: { ...process.env, DATABASE_URL }, stdio: 'ignore' });
  const children: ChildProcess[] = [];
  try {
    // BENCH_SYNC_NODE_ARGS: the same for the synchronizer's node (SYNC_FLUSH_MS and the like come from the environment).
    const sync = MODE === 'rabbitmq' ? start([...(process.env.BENCH_SYNC_NODE_ARGS ?? '').split(' ').filter(Boolean), 'dist/messenger/synchronizer.js'], env({ WORKERS_NUM: '1', METRICS_PORT: '0' })) : undefined;
    if (sync) children.push(sync);
    // BENCH_NODE_ARGS: options for the web processes' node, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" (workers inherit them).
    const web = start([...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean), 'dist/messenger/main.js'], env());
    children.push(web);
    await waitHttp(PORT, '/ping', web);
    await api('POST', '/v1/auth/register', { user_name: 'bench', password: 'correct horse battery' });
    const session = (await api('POST', '/v1/auth/login', { user_name: 'bench', password: 'correct horse battery' })).session_id as string;
    // BENCH_CPU_CHATS (default 1): the posts go round-robin into that many chats, as the bench's "32 chats" rows do.
    const paths: string[] = [];
    for (let i = 0; i < Number(process.env.BENCH_CPU_CHATS ?? 1); i++) {
      const chat = (await api('POST', '/v1/chats', { chat_name: `cpu ${i}` }, session)).chat_id as string;
      const member = (await api('POST', `/v1/chats/${chat}/users`, { user_name: 'bench' }, session)).user_id as string;
      paths.push(`/v1/chats/${chat}/messages?user_id=${member}`);
    }
    const run = (amount: number) =>
      autocannon({
        url: `http://127.0.0.1:${PORT}${paths[0]}`, connections: CONNECTIONS, amount, method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `session_id ${session}` },
        body: JSON.stringify({ message: TEXT }),
        requests: paths.length > 1 ? paths.map((p) => ({ path: p })) : undefined,
      });
    await run(Math.min(REQUESTS, 3000));
    const dbPids = async () =>
      (await admin.query('SELECT pid FROM pg_stat_activity WHERE datname = $1', [DB_NAME])).rows.map((r: { pid: number }) => r.pid);
    const webPids = [web.pid as number, ...childPids(web.pid as number)];
    const groups: Record<string, number[]> = { web: webPids, postgres: await dbPids() };
    if (sync) groups.synchronizer = [sync.pid as number];
    const before = Object.fromEntries(Object.entries(groups).map(([k, pids]) => [k, new Map(pids.map((p) => [p, cpuTicks(p)]))]));
    const serversBefore = new Map(sharedServers().map((p) => [p, cpuTicks(p.pid)]));
    const redis = new Redis(env().REDIS_URL);
    const callsBefore = await roundTrips(redis, admin);
    const t0 = performance.now();
    const r = await run(REQUESTS);
    const seconds = (performance.now() - t0) / 1000;
    // The synchronizer's work for these posts may still be under way: wait until it is idle.
    if (sync) {
      let last = -1;
      for (;;) {
        await new Promise((res) => setTimeout(res, 500));
        const now = cpuTicks(sync.pid as number);
        if (now === last) break;
        last = now;
      }
    }
    // Backends opened during the run count from zero.
    for (const p of await dbPids()) if (!before.postgres.has(p)) before.postgres.set(p, 0);
    const spent: Record<string, number> = {};
    for (const [k, m] of Object.entries(before)) {
      let sum = 0;
      for (const [p, t] of m) sum += cpuTicks(p) - t;
      spent[k] = (sum * TICK_MS * 1000) / r.requests.total; // µs per request
    }
    const total = Object.values(spent).reduce((a, b) => a + b, 0);
    const sharedCpu: Record<string, number> = {};
    for (const [p, t] of serversBefore) sharedCpu[p.name] = Math.round(((sharedCpu[p.name] ?? 0) + ((cpuTicks(p.pid) - t) * TICK_MS * 1000) / r.requests.total));
    // A backend reports its transactions to pg_stat_database at most once a second.
    await new Promise((res) => setTimeout(res, 1500));
    const callsAfter = await roundTrips(redis, admin);
    redis.disconnect();
    const callsPerRequest: Record<string, number> = {};
    for (const [k, n] of callsAfter) {
      const d = n - (callsBefore.get(k) ?? 0);
      if (d > 0 && k !== 'redis info') callsPerRequest[k] = Number((d / r.requests.total).toFixed(3));
    }
    const peakRssMbOfWorkers = webPids.slice(1).map((p) => Math.round(peakRssMb(p)));
    const out = {
      mode: MODE, requests: r.requests.total, non2xx: r.non2xx + r.errors, seconds: Number(seconds.toFixed(1)), rps: Math.round(r.requests.total / seconds),
      p50ms: r.latency.p50, p99ms: r.latency.p99, peakRssMbOfWorkers, cpuMicrosPerRequest: Object.fromEntries(Object.entries({ ...spent, total }).map(([k, v]) => [k, Math.round(v)])),
      sharedServersCpuMicrosPerRequest: sharedCpu,
      callsPerRequest,
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    for (const c of children) await stop(c);
    await admin.query(`DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)`);
    await admin.end();
    const conn = await amqp.connect(env().RMQ_URL);
    const ch = await conn.createChannel();
    for (const q of [`bench.${ID}.sync`, `bench.${ID}.sync.dead`, `bench.${ID}.search`, `bench.${ID}.search.dead`]) await ch.deleteQueue(q).catch(() => {});
    await conn.close();
    // And its keys on the shared Redis (sessions; the chats' cache versions have no expiry).
    const redis = new Redis(env().REDIS_URL);
    for await (const keys of redis.scanStream({ match: `bench:${ID}:*`, count: 500 }) as AsyncIterable<string[]>) {
      if (keys.length > 0) await redis.del(...keys);
    }
    redis.disconnect();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    killAll();
    process.exit(1);
  },
);
