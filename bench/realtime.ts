/**
 * npm run bench:realtime [-- --quick]   (also the last part of npm run bench)
 *
 * The real-time gateway against a bare `ws` broadcast baseline, in the same
 * run, on loopback only:
 * - delivery latency from a POST's 201 on instance A to the `message` frame
 *   on each of 1,000 sockets on instance B (and from the POST's start),
 *   p50/p99, at 20,000 frames/s in total (20 posts/s × 1,000 sockets), and
 *   the frames/s actually delivered;
 * - memory per idle connection at 5,000 connections (RSS delta / connections).
 * Services mode (local PostgreSQL and Redis); creates and drops its own
 * database and Redis prefix, stops every process it started, bounded in time.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { WebSocket } from 'ws';
import { killAll, start, stop, waitHttp } from './processes';

const ROOT = path.resolve(__dirname, '..');
const QUICK = process.argv.includes('--quick');
const ID = randomBytes(4).toString('hex');
const PG_ADMIN = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const DB_NAME = `messenger_bench_rt_${ID}`;
const DATABASE_URL = (() => {
  const u = new URL(PG_ADMIN);
  u.pathname = `/${DB_NAME}`;
  return u.toString();
})();
const PREFIX = `bench:${ID}:`;
const SOCKETS = 1000;
const POSTS_PER_SECOND = 20;
const SECONDS = QUICK ? 5 : 10;
const IDLE_SOCKETS = 5000;
const DEADLINE_MS = 5 * 60_000;

const log = (s: string) => process.stdout.write(`${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const percentile = (xs: number[], p: number) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]);
const fmt = (n: number) => (Number.isNaN(n) ? '–' : n >= 100 ? n.toFixed(0) : n.toFixed(1));


function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

async function api(port: number, method: string, p: string, body?: object, session?: string): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${port}${p}`, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
    headers: { 'content-type': 'application/json', ...(session === undefined ? {} : { authorization: `session_id ${session}` }) },
  });
  return (await res.json()) as Record<string, unknown>;
}

const appEnv = (port: number): Record<string, string> => ({
  DATABASE_URL, REDIS_URL, REDIS_PREFIX: PREFIX, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn',
  APPS: 'auth,chats,messages,realtime', WS_MAX_PER_ACCOUNT: '100000', BCRYPT_COST: '4', POOL_SIZE: '10',
});

/** Opens `n` sockets, `batch` at a time; each counts `message` frames by their text (the post number). */
async function openSockets(url: string, n: number, headers: Record<string, string>, onFrame?: (k: number, at: number) => void, batch = 100): Promise<WebSocket[]> {
  const out: WebSocket[] = [];
  for (let i = 0; i < n; i += batch) {
    const group = await Promise.all(
      Array.from({ length: Math.min(batch, n - i) }, () =>
        new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(url, { headers, perMessageDeflate: false });
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
          if (onFrame !== undefined) {
            ws.on('message', (data) => {
              const at = performance.now();
              const text = /"text":"(\d+)"/.exec(String(data));
              if (text !== null) onFrame(Number(text[1]), at);
            });
          }
        }),
      ),
    );
    out.push(...group);
  }
  return out;
}

interface Latency {
  fromOkP50: number;
  fromOkP99: number;
  fromSendP50: number;
  fromSendP99: number;
  framesPerSecond: number;
  delivered: number;
  expected: number;
}

/** Posts POSTS_PER_SECOND through `post` for SECONDS while SOCKETS sockets listen; latencies in ms. */
async function measure(label: string, wsUrl: string, headers: Record<string, string>, post: (k: number) => Promise<void>): Promise<Latency> {
  const arrivals = new Map<number, number[]>();
  const sockets = await openSockets(wsUrl, SOCKETS, headers, (k, at) => {
    const list = arrivals.get(k);
    if (list === undefined) arrivals.set(k, [at]);
    else list.push(at);
  });
  await sleep(1000);
  const sentAt = new Map<number, number>();
  const okAt = new Map<number, number>();
  const total = POSTS_PER_SECOND * SECONDS;
  const began = performance.now();
  const inflight: Promise<void>[] = [];
  for (let k = 0; k < total; k++) {
    const due = began + (k * 1000) / POSTS_PER_SECOND;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    sentAt.set(k, performance.now());
    inflight.push(post(k).then(() => void okAt.set(k, performance.now())));
  }
  await Promise.all(inflight);
  await sleep(2000);
  const fromOk: number[] = [];
  const fromSend: number[] = [];
  let delivered = 0;
  let last = began;
  for (const [k, list] of arrivals) {
    for (const at of list) {
      delivered++;
      last = Math.max(last, at);
      fromOk.push(Math.max(0, at - (okAt.get(k) ?? at)));
      fromSend.push(at - (sentAt.get(k) ?? at));
    }
  }
  for (const ws of sockets) ws.terminate();
  const r = {
    fromOkP50: percentile(fromOk, 50), fromOkP99: percentile(fromOk, 99), fromSendP50: percentile(fromSend, 50), fromSendP99: percentile(fromSend, 99),
    framesPerSecond: delivered / ((last - began) / 1000), delivered, expected: total * SOCKETS,
  };
  log(`  ${label}: ${r.delivered}/${r.expected} frames, ${fmt(r.framesPerSecond)} frames/s; from 201 p50 ${fmt(r.fromOkP50)} ms p99 ${fmt(r.fromOkP99)} ms; from POST start p50 ${fmt(r.fromSendP50)} ms p99 ${fmt(r.fromSendP99)} ms`);
  return r;
}

/** RSS growth of `pid` per idle connection, in KB, for IDLE_SOCKETS connections. */
async function idleMemory(label: string, pid: number, wsUrl: string, headers: Record<string, string>): Promise<number> {
  await sleep(1500);
  const before = rssKb(pid);
  const sockets = await openSockets(wsUrl, IDLE_SOCKETS, headers, undefined, 200);
  await sleep(3000);
  const after = rssKb(pid);
  for (const ws of sockets) ws.terminate();
  const per = (after - before) / IDLE_SOCKETS;
  log(`  ${label}: RSS ${fmt(before / 1024)} → ${fmt(after / 1024)} MB with ${IDLE_SOCKETS} idle connections: ${fmt(per)} KB each`);
  return per;
}

async function main(): Promise<void> {
  const timer = setTimeout(() => {
    log('bench:realtime ran past its deadline; stopping');
    void cleanup().then(() => process.exit(1));
  }, DEADLINE_MS);
  timer.unref();
  log(`bench:realtime ${QUICK ? '(quick) ' : ''}id ${ID}`);
  const admin = new pg.Client({ connectionString: PG_ADMIN });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${DB_NAME}`);
  await admin.end();
  execFileSync(process.execPath, ['--import', 'tsx', 'messenger/db-cli.ts', 'migrate'], { cwd: ROOT, env: { ...process.env, DATABASE_URL }, stdio: 'ignore' });

  const [A, B, C, PUB, SUB] = [18751, 18752, 18753, 18761, 18762];
  const appA = start(['--import', 'tsx', 'messenger/main.ts'], appEnv(A));
  const appB = start(['--import', 'tsx', 'messenger/main.ts'], appEnv(B));
  const pub = start(['--import', 'tsx', 'bench/baselines/ws-broadcast.ts'], { ROLE: 'pub', PORT: String(PUB), REDIS_URL, CHANNEL: `${PREFIX}baseline` });
  const sub = start(['--import', 'tsx', 'bench/baselines/ws-broadcast.ts'], { ROLE: 'sub', PORT: String(SUB), REDIS_URL, CHANNEL: `${PREFIX}baseline` });
  await Promise.all([waitHttp(A, '/ping'), waitHttp(B, '/ping'), waitHttp(PUB, '/'), waitHttp(SUB, '/')]);

  await api(A, 'POST', '/v1/auth/register', { user_name: 'bench', password: 'correct horse battery' });
  const session = (await api(A, 'POST', '/v1/auth/login', { user_name: 'bench', password: 'correct horse battery' })).session_id as string;
  const chat = (await api(A, 'POST', '/v1/chats', { chat_name: 'live' }, session)).chat_id as string;
  const member = (await api(A, 'POST', `/v1/chats/${chat}/users`, { user_name: 'bench' }, session)).user_id as string;
  const auth = { authorization: `session_id ${session}` };

  log(`latency: ${SOCKETS} sockets on the second instance, ${POSTS_PER_SECOND} posts/s on the first (${SOCKETS * POSTS_PER_SECOND} frames/s), ${SECONDS} s`);
  const postTo = (port: number, p: string, extraHeaders: Record<string, string>) => async (k: number) => {
    const res = await fetch(`http://127.0.0.1:${port}${p}`, { method: 'POST', body: JSON.stringify({ message: String(k) }), headers: { 'content-type': 'application/json', ...extraHeaders } });
    if (res.status !== 201) throw new Error(`POST answered ${res.status}`);
    await res.arrayBuffer();
  };
  const app = await measure('messenger', `ws://127.0.0.1:${B}/v1/events`, auth, postTo(A, `/v1/chats/${chat}/messages?user_id=${member}`, auth));
  const bare = await measure('bare ws + Redis', `ws://127.0.0.1:${SUB}/`, {}, postTo(PUB, '/', {}));
  await stop(appA);
  await stop(appB);

  log(`memory: ${IDLE_SOCKETS} idle connections`);
  const appC = start(['--import', 'tsx', 'messenger/main.ts'], appEnv(C));
  await waitHttp(C, '/ping');
  const appMem = await idleMemory('messenger', appC.pid ?? 0, `ws://127.0.0.1:${C}/v1/events`, auth);
  const bareMem = await idleMemory('bare ws', sub.pid ?? 0, `ws://127.0.0.1:${SUB}/`, {});
  await stop(appC);
  await stop(pub);
  await stop(sub);

  const result = { id: ID, quick: QUICK, sockets: SOCKETS, postsPerSecond: POSTS_PER_SECOND, seconds: SECONDS, app, bare, idle: { connections: IDLE_SOCKETS, appKbPerConnection: appMem, bareKbPerConnection: bareMem } };
  const md = [
    `Real-time delivery (${new Date().toISOString().slice(0, 10)}, loopback, 2 cores shared): ${SOCKETS} sockets on instance B, ${POSTS_PER_SECOND} posts/s through instance A (${SOCKETS * POSTS_PER_SECOND} frames/s), ${SECONDS} s.`,
    '',
    '| | frames delivered | frames/s | p50 ms from 201 | p99 ms from 201 | p50 ms from POST start | p99 ms from POST start | KB per idle connection |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    `| messenger (2 instances, PostgreSQL, Redis) | ${app.delivered}/${app.expected} | ${fmt(app.framesPerSecond)} | ${fmt(app.fromOkP50)} | ${fmt(app.fromOkP99)} | ${fmt(app.fromSendP50)} | ${fmt(app.fromSendP99)} | ${fmt(appMem)} |`,
    `| bare ws + Redis pub/sub | ${bare.delivered}/${bare.expected} | ${fmt(bare.framesPerSecond)} | ${fmt(bare.fromOkP50)} | ${fmt(bare.fromOkP99)} | ${fmt(bare.fromSendP50)} | ${fmt(bare.fromSendP99)} | ${fmt(bareMem)} |`,
    '',
    `Throughput ratio: ${fmt((app.framesPerSecond / bare.framesPerSecond) * 100)}% of the baseline.`,
  ].join('\n');
  const dir = path.join(ROOT, 'bench/results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'realtime.json'), `${JSON.stringify(result, null, 2)}\n`);
  fs.writeFileSync(path.join(dir, 'realtime.md'), `${md}\n`);
  log(md);
}

async function cleanup(): Promise<void> {
  killAll();
  try {
    const admin = new pg.Client({ connectionString: PG_ADMIN });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)`);
    await admin.end();
    const redis = new Redis(REDIS_URL);
    const keys = await redis.keys(`${PREFIX}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  } catch (err) {
    log(`cleanup: ${String(err)}`);
  }
}

process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
main().then(
  () => cleanup().then(() => process.exit(0)),
  (err: unknown) => {
    log(`bench:realtime failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    void cleanup().then(() => process.exit(1));
  },
);
