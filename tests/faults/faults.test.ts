/**
 * npm run test:faults — the service under real faults, in the services mode.
 *
 * Starts a PRIVATE PostgreSQL cluster, Redis server and RabbitMQ node in temp
 * dirs on free ports (so the shared ones on the standard ports keep running,
 * untouched, for everyone else), runs two web workers and a consumer as real
 * processes under a steady load, and stops and restarts each dependency for
 * real, in turn. Every case prints what it checked and its counts. The
 * private services are stopped and removed afterwards, even when a check fails.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { migrationSource } from '../../migrations';
import { Redis } from 'ioredis';
import { freePort, ServiceProcess } from '../helpers/process';
import { TcpProxy } from '../helpers/tcp-proxy';

// The newest installed PostgreSQL, chosen on purpose (several versions may be installed side by side).
const PG_VERSION = fs.readdirSync('/usr/lib/postgresql').filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a))[0];
const PG_BIN = `/usr/lib/postgresql/${PG_VERSION}/bin`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function asPostgres(cmd: string, args: string[]): string {
  return execFileSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

/** A temp dir owned by a service account, which the server drops to. */
function ownedTempDir(prefix: string, user: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chownSync(d, Number(execFileSync('id', ['-u', user]).toString()), Number(execFileSync('id', ['-g', user]).toString()));
  return d;
}

/** Resolves once something accepts TCP connections on the port. */
async function listening(port: number, ms = 60_000): Promise<void> {
  await until(ms, `port ${port}`, () => new Promise<boolean>((resolve) => {
    const sock = net.connect(port, '127.0.0.1', () => {
      sock.destroy();
      resolve(true);
    });
    sock.on('error', () => resolve(false));
  }));
}

/** A RabbitMQ node of its own (name, ports, data dir), started and stopped with the Debian package's scripts. */
class PrivateRabbit {
  readonly node = `faults${process.pid}@localhost`;
  constructor(private readonly dir: string, readonly port: number, private readonly distPort: number) {
    fs.writeFileSync(path.join(dir, 'rabbitmq.conf'), `listeners.tcp.default = 127.0.0.1:${port}\n`);
    fs.writeFileSync(path.join(dir, 'enabled_plugins'), '[].\n');
  }

  async start(): Promise<void> {
    execFileSync('rabbitmq-server', ['-detached'], {
      stdio: 'ignore',
      env: {
        ...process.env, RABBITMQ_NODENAME: this.node, RABBITMQ_NODE_PORT: String(this.port), RABBITMQ_DIST_PORT: String(this.distPort),
        RABBITMQ_MNESIA_BASE: `${this.dir}/mnesia`, RABBITMQ_LOG_BASE: `${this.dir}/log`, RABBITMQ_CONFIG_FILE: `${this.dir}/rabbitmq.conf`,
        RABBITMQ_ENABLED_PLUGINS_FILE: `${this.dir}/enabled_plugins`, RABBITMQ_PID_FILE: `${this.dir}/pid`,
      },
    });
    await listening(this.port);
  }

  stop(): void {
    execFileSync('rabbitmqctl', ['-n', this.node, 'stop'], { stdio: 'ignore', timeout: 60_000 });
  }
}

interface Tally {
  sent: number;
  acked: string[];
  unavailable: number;
  /** Answers other than 201 and 503, by status. */
  other: Map<number, number>;
  /** Requests that got no HTTP answer at all (connection refused or cut), by error. */
  failed: Map<string, number>;
  hung: number;
}

/** A steady write load: `concurrency` clients posting messages until stopped. */
function writeLoad(base: string, session: string, chatId: string, userId: string, concurrency = 6) {
  const tally: Tally = { sent: 0, acked: [], unavailable: 0, other: new Map(), failed: new Map(), hung: 0 };
  let running = true;
  let n = 0;
  const client = async () => {
    while (running) {
      const text = `load ${process.pid} ${n++}`;
      tally.sent++;
      try {
        const res = await fetch(`${base}/v1/chats/${chatId}/messages?user_id=${userId}`, {
          method: 'POST',
          headers: { authorization: `session_id ${session}`, 'content-type': 'application/json' },
          body: JSON.stringify({ message: text }),
          signal: AbortSignal.timeout(8000),
        });
        if (res.status === 201) tally.acked.push(((await res.json()) as { message_id: string }).message_id);
        else if (res.status === 503) tally.unavailable++;
        else tally.other.set(res.status, (tally.other.get(res.status) ?? 0) + 1);
        if (res.status !== 201) await sleep(50);
      } catch (err) {
        if ((err as Error).name === 'TimeoutError') tally.hung++;
        else {
          const why = String((err as { cause?: { code?: unknown } }).cause?.code ?? (err as Error).message);
          tally.failed.set(why, (tally.failed.get(why) ?? 0) + 1);
        }
        await sleep(50);
      }
    }
  };
  const done = Promise.all(Array.from({ length: concurrency }, client));
  return {
    tally,
    async stop() {
      running = false;
      await done;
      return tally;
    },
  };
}

async function until(ms: number, what: string, fn: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      if (await fn()) return;
    } catch {
      // not yet
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('faults (services mode, private PostgreSQL, Redis and RabbitMQ)', function () {
  this.timeout(240_000);
  let dir: string;
  let pgPort: number;
  let redisPort: number;
  let redis: ChildProcess | undefined;
  let rabbitDir: string;
  let rabbit: PrivateRabbit;
  let web: ServiceProcess;
  let consumer: ServiceProcess;
  // The write-behind mode: a web process and a synchronizer of their own, over the same private services.
  let wbWeb: ServiceProcess | undefined;
  let wbSync: ServiceProcess | undefined;
  let wbBase: string;
  let env: Record<string, string>;
  let base: string;
  let session: string;
  let chatId: string;
  let userId: string;
  let db: pg.Pool;

  const pgCtl = (action: 'start' | 'stop') =>
    asPostgres(`${PG_BIN}/pg_ctl`, action === 'start'
      ? ['-D', `${dir}/pg`, '-l', `${dir}/pg.log`, '-w', '-o', `-p ${pgPort} -k ${dir} -c listen_addresses=127.0.0.1`, 'start']
      : ['-D', `${dir}/pg`, '-m', 'fast', '-w', 'stop']);
  const startRedis = () => {
    redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  };
  /** How many of these acknowledged message ids are in the database. */
  const countStored = async (acked: string[]) => {
    const ids = acked.map((h) => `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`);
    return Number((await db.query('SELECT count(*) FROM messages WHERE id = ANY($1::uuid[])', [ids])).rows[0].count);
  };
  const api = async (method: string, p: string, body?: object, s?: string) => {
    const res = await fetch(`${base}${p}`, {
      method, body: body === undefined ? undefined : JSON.stringify(body),
      headers: { 'content-type': 'application/json', ...(s ? { authorization: `session_id ${s}` } : {}) },
      signal: AbortSignal.timeout(8000),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  before(async () => {
    dir = ownedTempDir('messenger-faults-', 'postgres');
    rabbitDir = ownedTempDir('messenger-faults-rabbitmq-', 'rabbitmq');
    pgPort = await freePort();
    redisPort = await freePort();
    asPostgres(`${PG_BIN}/initdb`, ['-D', `${dir}/pg`, '-A', 'trust', '-U', 'postgres', '--no-sync']);
    pgCtl('start');
    const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${pgPort}/postgres` });
    await admin.connect();
    await admin.query('CREATE DATABASE messenger');
    await admin.end();
    startRedis();
    rabbit = new PrivateRabbit(rabbitDir, await freePort(), await freePort());
    await rabbit.start();
    const webPort = await freePort();
    base = `http://127.0.0.1:${webPort}`;
    env = {
      DATABASE_URL: `postgres://postgres@127.0.0.1:${pgPort}/messenger`, REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      RMQ_URL: `amqp://guest:guest@127.0.0.1:${rabbit.port}`, SEARCH_QUEUE: `faults.${process.pid}.search`, PORT: String(webPort), WORKERS_NUM: '2',
      RPS_LIMIT: '10000', DB_TIMEOUT_MS: '1000', BCRYPT_COST: '4', LOG_LEVEL: 'info', SEARCH_IN_PROCESS_CONSUMER: '0',
    };
    execFileSync(process.execPath, ['--import', 'tsx', 'messenger/db-cli.ts', 'migrate'], { env: { ...process.env, ...env }, cwd: path.resolve(__dirname, '../..') });
    db = new pg.Pool({ connectionString: env.DATABASE_URL, max: 2 });
    db.on('error', () => {});
    web = new ServiceProcess('messenger/main.ts', env);
    consumer = new ServiceProcess('messenger/consumer.ts', env);
    await web.waitFor((l) => l.msg === 'messenger-api listening', 2);
    await consumer.waitFor((l) => l.msg === 'messenger-run-task-consumer started');
    await api('POST', '/v1/auth/register', { user_name: 'fault', password: 'pw' });
    session = (await api('POST', '/v1/auth/login', { user_name: 'fault', password: 'pw' })).body.session_id as string;
    chatId = (await api('POST', '/v1/chats', { chat_name: 'faults' }, session)).body.chat_id as string;
    userId = (await api('POST', `/v1/chats/${chatId}/users`, { user_name: 'fault' }, session)).body.user_id as string;
  });

  after(async () => {
    web?.kill();
    consumer?.kill();
    wbWeb?.kill();
    wbSync?.kill();
    await db?.end().catch(() => {});
    redis?.kill('SIGKILL');
    try {
      rabbit?.stop();
    } catch {
      // not running
    }
    fs.rmSync(rabbitDir, { recursive: true, force: true });
    try {
      pgCtl('stop');
    } catch {
      // already stopped
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('PostgreSQL stopped under write load: 503s (no 500, no hang), /ping 200, recovery by itself, no acknowledged write lost or doubled', async () => {
    const load = writeLoad(base, session, chatId, userId);
    await sleep(1500);
    pgCtl('stop');
    await sleep(1000);
    assert.equal((await fetch(`${base}/ping`, { signal: AbortSignal.timeout(3000) })).status, 200);
    assert.equal((await fetch(`${base}/ping_db`, { signal: AbortSignal.timeout(5000) })).status, 503);
    await sleep(2000);
    pgCtl('start');
    await until(20_000, 'writes to succeed again', async () => {
      const before = load.tally.acked.length;
      await sleep(500);
      return load.tally.acked.length > before;
    });
    await sleep(1000);
    const t = await load.stop();
    const found = await countStored(t.acked);
    const seqs = (await db.query('SELECT count(*) AS n, count(DISTINCT seq) AS d, count(DISTINCT text) AS texts FROM messages WHERE chat_id = $1', [chatId])).rows[0];
    console.log(`      postgres stop: sent ${t.sent}, acknowledged ${t.acked.length}, 503 ${t.unavailable}, other ${JSON.stringify([...t.other])}, no answer ${JSON.stringify([...t.failed])}, hung ${t.hung}, found ${found}, lost ${t.acked.length - found}`);
    assert.ok(t.unavailable > 0, 'the outage was not seen');
    assert.equal(t.hung, 0);
    // Through the outage every request is answered, and only with 201 or 503.
    assert.deepEqual([...t.other], [], 'an answer other than 201 or 503');
    assert.deepEqual([...t.failed], [], 'a request got no answer (connection refused or cut)');
    assert.equal(found, t.acked.length, 'an acknowledged message is missing');
    assert.equal(Number(seqs.n), Number(seqs.d), 'a sequence number was used twice');
    assert.equal(Number(seqs.n), Number(seqs.texts), 'a message was stored twice');
  });

  it('Redis restarted empty: logged-in users stay logged in (restored from PostgreSQL), nothing crashes', async () => {
    redis?.kill('SIGKILL');
    await sleep(1500);
    const during = await api('POST', '/v1/chats', { chat_name: 'during' }, session);
    startRedis();
    await until(20_000, 'sessions to work again', async () => (await api('POST', '/v1/chats', { chat_name: 'after' }, session)).status === 201);
    // Caching resumes: the second read of a page is a hit again; throttling counts again.
    const first = await fetch(`${base}/v1/chats/${chatId}/messages?limit=5`, { headers: { authorization: `session_id ${session}` } });
    const second = await fetch(`${base}/v1/chats/${chatId}/messages?limit=5`, { headers: { authorization: `session_id ${session}` } });
    console.log(`      redis restart: during the outage ${during.status}, after it 201 with the same session; page ${first.status} ${first.headers.get('x-cache')} then ${second.status} ${second.headers.get('x-cache')}; X-RateLimit-Remaining ${second.headers.get('x-ratelimit-remaining')}`);
    assert.equal(during.status, 503);
    assert.equal(first.status, 200);
    assert.equal(second.headers.get('x-cache'), 'HIT');
    assert.equal(second.headers.get('x-ratelimit-limit'), '10000');
    assert.ok(Number(second.headers.get('x-ratelimit-remaining')) < 10000);
    assert.equal(web.child.exitCode, null, 'the web process died');
    assert.equal(consumer.child.exitCode, null, 'the consumer died');
  });

  it('RabbitMQ stopped and restarted under search load: 503 during, every accepted task finished after, web and consumer reconnect by themselves', async () => {
    // Hold the consumer on its first task so that accepted tasks are still queued when the broker stops.
    const hold = await db.connect();
    let released = false;
    const release = async () => {
      if (!released) await hold.query('ROLLBACK').catch(() => {});
      released = true;
    };
    try {
      await hold.query('BEGIN');
      await hold.query('LOCK TABLE messages IN ACCESS EXCLUSIVE MODE');
      const accepted: string[] = [];
      for (let i = 0; i < 5; i++) accepted.push((await api('POST', '/v1/chats/search', { message: `load message ${i}` }, session)).body.task_id as string);
      // A steady search load through the whole outage.
      let running = true;
      let sent = 0;
      let unavailable = 0;
      const other: number[] = [];
      const searches = (async () => {
        while (running) {
          sent++;
          const r = await api('POST', '/v1/chats/search', { message: `load message ${sent}` }, session);
          if (r.status === 201) accepted.push(r.body.task_id as string);
          else if (r.status === 503) unavailable++;
          else other.push(r.status);
          await sleep(100);
        }
      })();
      await sleep(500);
      rabbit.stop();
      await sleep(1500);
      const during = await api('POST', '/v1/chats/search', { message: 'during the outage' }, session);
      await rabbit.start();
      await release();
      await until(30_000, 'search to accept tasks again', async () => (await api('POST', '/v1/chats/search', { message: 'after the restart' }, session)).status === 201);
      await sleep(1000);
      running = false;
      await searches;
      let finished = 0;
      for (const id of accepted) {
        await until(60_000, `task ${id}`, async () => (await api('GET', `/v1/chats/search/status/${id}`, undefined, session)).body.status === 'SUCCESS');
        finished++;
      }
      console.log(`      rabbitmq restart: search requests sent ${sent}, 503 ${unavailable}, other ${JSON.stringify(other)}; tasks accepted ${accepted.length}, finished ${finished}, lost ${accepted.length - finished}; a request during the outage: ${during.status}`);
      assert.equal(during.status, 503);
      assert.ok(unavailable > 0);
      assert.deepEqual(other, []);
      assert.equal(web.child.exitCode, null, 'the web process died');
      assert.equal(consumer.child.exitCode, null, 'the consumer died');
    } finally {
      await release();
      hold.release();
    }
  });

  it('consumer SIGKILLed mid-task: a new consumer finishes the task, once', async () => {
    const hold = await db.connect();
    try {
      await hold.query('BEGIN');
      await hold.query('LOCK TABLE messages IN ACCESS EXCLUSIVE MODE');
      const id = (await api('POST', '/v1/chats/search', { message: 'killed mid task' }, session)).body.task_id as string;
      await until(20_000, 'the task to start', async () => (await api('GET', `/v1/chats/search/status/${id}`, undefined, session)).body.status === 'IN_PROCESS');
      consumer.kill();
      await consumer.exited;
      await hold.query('ROLLBACK');
      consumer = new ServiceProcess('messenger/consumer.ts', env);
      await until(30_000, 'the task to finish', async () => (await api('GET', `/v1/chats/search/status/${id}`, undefined, session)).body.status === 'SUCCESS');
      const runs = consumer.lines.filter((l) => l.msg === 'search task done' && l.taskId === id).length;
      console.log(`      consumer SIGKILL: task ${id} finished by the new consumer (${runs} completed run)`);
      assert.equal(runs, 1);
    } finally {
      await hold.query('ROLLBACK').catch(() => {});
      hold.release();
    }
  });

  it('a web worker SIGKILLed under load is replaced; the other keeps serving', async () => {
    const load = writeLoad(base, session, chatId, userId, 4);
    await sleep(1000);
    const workers = fs.readFileSync(`/proc/${web.child.pid}/task/${web.child.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    assert.equal(workers.length, 2);
    const before = load.tally.acked.length;
    process.kill(workers[0], 'SIGKILL');
    await sleep(1500);
    const during = load.tally.acked.length;
    await web.waitFor((l) => l.msg === 'messenger-api listening', 3, 20_000);
    await sleep(1000);
    const t = await load.stop();
    const after = fs.readFileSync(`/proc/${web.child.pid}/task/${web.child.pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    const found = await countStored(t.acked);
    const cut = [...t.failed.values()].reduce((a, b) => a + b, 0);
    console.log(`      worker SIGKILL: acknowledged ${before} before, ${during - before} in the 1.5 s after, ${t.acked.length} in all, found ${found}, lost ${t.acked.length - found}; connections cut with the worker (never acknowledged) ${cut}; workers ${workers.join(',')} -> ${after.join(',')}`);
    assert.equal(found, t.acked.length, 'an acknowledged message is missing');
    // Requests the killed worker was serving lose their connection; every answer is a 201.
    assert.deepEqual([...t.other], [], 'an answer other than 201');
    assert.deepEqual([...t.failed.keys()].filter((k) => !['ECONNRESET', 'UND_ERR_SOCKET', 'other side closed'].includes(k)), [], `only cut connections: ${JSON.stringify([...t.failed])}`);
    assert.ok(cut <= 4, `${cut} requests lost their connection; at most the 4 clients' requests in flight on the killed worker may`);
    assert.ok(during > before, 'the surviving worker did not keep serving');
    assert.equal(after.length, 2);
    assert.ok(!after.includes(workers[0]));
  });

  /** Starts the write-behind web process and synchronizer once; returns a fresh chat and member to post into. */
  const writeBehind = async (): Promise<{ chat: string; member: string }> => {
    if (wbWeb === undefined) {
      const port = await freePort();
      wbBase = `http://127.0.0.1:${port}`;
      const wb = { ...env, PORT: String(port), WORKERS_NUM: '1', MESSAGE_STORAGE_TYPE: 'rabbitmq', SYNC_QUEUE: `faults.${process.pid}.sync`, SYNC_IN_PROCESS: '0', SYNC_FLUSH_MS: '50' };
      wbWeb = new ServiceProcess('messenger/main.ts', wb);
      wbSync = new ServiceProcess('messenger/synchronizer.ts', { ...wb, METRICS_PORT: String(await freePort()) });
      await wbWeb.waitFor((l) => l.msg === 'messenger-api listening');
      await wbSync.waitFor((l) => l.msg === 'messenger-run-synchronizer started');
    }
    const chat = (await api('POST', '/v1/chats', { chat_name: 'write-behind' }, session)).body.chat_id as string;
    const member = (await api('POST', `/v1/chats/${chat}/users`, { user_name: 'fault' }, session)).body.user_id as string;
    return { chat, member };
  };

  /** Waits until every acknowledged message is stored, then checks each is there once and the chat order has no gap. */
  const storedOnceInOrder = async (what: string, chat: string, t: Tally) => {
    await until(60_000, 'the synchronizer to store every acknowledged message', async () => (await countStored(t.acked)) === t.acked.length).catch(() => {});
    const found = await countStored(t.acked);
    const r = (await db.query('SELECT count(*) AS n, count(DISTINCT text) AS texts, min(seq) AS lo, max(seq) AS hi FROM messages WHERE chat_id = $1', [chat])).rows[0];
    console.log(`      ${what}: sent ${t.sent}, acknowledged ${t.acked.length}, 503 ${t.unavailable}, other ${JSON.stringify([...t.other])}, hung ${t.hung}, stored ${found}, lost ${t.acked.length - found}, rows ${r.n} (seq ${r.lo}..${r.hi})`);
    assert.equal(found, t.acked.length, 'an acknowledged message is missing');
    assert.equal(Number(r.n), Number(r.texts), 'a message was stored twice');
    assert.deepEqual([Number(r.lo), Number(r.hi)], [1, Number(r.n)], 'the chat order has a gap');
    assert.equal(t.hung, 0);
    assert.equal([...t.other.keys()].filter((k) => k >= 500 && k !== 503).length, 0, 'a 5xx other than 503');
    assert.equal(wbSync?.child.exitCode, null, 'the synchronizer died');
  };

  it('write-behind: PostgreSQL stopped for 3 s under steady posting: the synchronizer waits it out; every acknowledged message stored once, in order', async () => {
    const { chat, member } = await writeBehind();
    const load = writeLoad(wbBase, session, chat, member);
    await sleep(1500);
    pgCtl('stop');
    await sleep(3000);
    pgCtl('start');
    await sleep(2000);
    await storedOnceInOrder('write-behind, postgres stop', chat, await load.stop());
  });

  it('write-behind: RabbitMQ restarted under steady posting: 503 while it is away, every acknowledged message stored once, in order', async () => {
    const { chat, member } = await writeBehind();
    const load = writeLoad(wbBase, session, chat, member);
    await sleep(1500);
    rabbit.stop();
    await sleep(1500);
    await rabbit.start();
    await until(30_000, 'posts to be accepted again', async () => {
      const before = load.tally.acked.length;
      await sleep(500);
      return load.tally.acked.length > before;
    });
    await sleep(1000);
    const t = await load.stop();
    assert.ok(t.unavailable > 0, 'the outage was not seen');
    await storedOnceInOrder('write-behind, rabbitmq restart', chat, t);
  });

  /** A second web process (one worker) with some settings of its own; the caller kills it. */
  async function extraWeb(overrides: Record<string, string>): Promise<{ proc: ServiceProcess; url: string }> {
    const port = await freePort();
    const proc = new ServiceProcess('messenger/main.ts', { ...env, WORKERS_NUM: '1', PORT: String(port), ...overrides });
    await proc.waitFor((l) => l.msg === 'messenger-api listening', 1, 60_000);
    return { proc, url: `http://127.0.0.1:${port}` };
  }
  const call = async (url: string, method: string, p: string, body?: object, s?: string, ms = 8000) => {
    const res = await fetch(`${url}${p}`, {
      method, body: body === undefined ? undefined : JSON.stringify(body),
      headers: { 'content-type': 'application/json', ...(s ? { authorization: `session_id ${s}` } : {}) },
      signal: AbortSignal.timeout(ms),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  /** Search task keys in the private Redis (the service's prefix is empty here). */
  const taskKeys = async (): Promise<string[]> => {
    const r = new Redis(redisPort, '127.0.0.1', { lazyConnect: true });
    try {
      await r.connect();
      return (await r.keys('task:*')).filter((k) => !k.endsWith(':results')).sort();
    } finally {
      r.disconnect();
    }
  };

  it('RabbitMQ that takes the connection but stops answering: search answers 503 and leaves no task; a cut connection is 503 too; both recover', async () => {
    const proxy = new TcpProxy('127.0.0.1', rabbit.port);
    await proxy.up();
    const web2 = await extraWeb({ RMQ_URL: `amqp://guest:guest@127.0.0.1:${proxy.port}` });
    try {
      assert.equal((await call(web2.url, 'POST', '/v1/chats/search', { message: 'before the black hole' }, session)).status, 201);
      const before = await taskKeys();
      // From now on the broker gets nothing: the publish is never confirmed.
      proxy.swallow = true;
      const started = Date.now();
      const unconfirmed = await call(web2.url, 'POST', '/v1/chats/search', { message: 'never confirmed' }, session, 30_000);
      const took = Date.now() - started;
      const after = await taskKeys();
      // The consumer may finish earlier tasks meanwhile; no new task may appear.
      const added = after.filter((k) => !before.includes(k));
      console.log(`      unconfirmed publish: ${unconfirmed.status} ${JSON.stringify(unconfirmed.body)} after ${took} ms; tasks added ${added.length}`);
      assert.deepEqual(unconfirmed, { status: 503, body: { message: 'service-unavailable' } });
      assert.deepEqual(added, [], 'a task was left behind for a publish that was never confirmed');
      assert.equal((await fetch(`${web2.url}/ping`)).status, 200);
      // The connection fails outright (cut, refused): 503 at once, then back by itself.
      proxy.swallow = false;
      await proxy.down();
      assert.equal((await call(web2.url, 'POST', '/v1/chats/search', { message: 'connection cut' }, session)).status, 503);
      await proxy.up();
      await until(30_000, 'search through the proxy again', async () => (await call(web2.url, 'POST', '/v1/chats/search', { message: 'after the cut' }, session)).status === 201);
      assert.equal(web2.proc.child.exitCode, null, 'the web process died');
    } finally {
      web2.proc.kill();
      await proxy.down();
    }
  });

  it('Redis unreachable at start-up: the service starts, answers 503 for what needs Redis, and recovers when Redis comes', async () => {
    const proxy = new TcpProxy('127.0.0.1', redisPort);
    await proxy.up();
    await proxy.down();
    const web3 = await extraWeb({ REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    try {
      assert.equal((await fetch(`${web3.url}/ping`)).status, 200);
      const login = await call(web3.url, 'POST', '/v1/auth/login', { user_name: 'fault', password: 'pw' });
      const health = await fetch(`${web3.url}/health`);
      console.log(`      redis down at start: login ${login.status}, /health ${health.status}`);
      assert.deepEqual(login, { status: 503, body: { message: 'service-unavailable' } });
      assert.equal(health.status, 503);
      await proxy.up();
      await until(30_000, 'login to work once Redis is there', async () => (await call(web3.url, 'POST', '/v1/auth/login', { user_name: 'fault', password: 'pw' })).status === 201);
      assert.equal((await fetch(`${web3.url}/health`)).status, 200);
    } finally {
      web3.proc.kill();
      await proxy.down();
    }
  });

  it('messenger-db rollback, run once per migration, undoes them all and migrate applies them again (as processes, on a database of its own)', async () => {
    const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${pgPort}/postgres` });
    await admin.connect();
    await admin.query('CREATE DATABASE rollback_check');
    await admin.end();
    const url = `postgres://postgres@127.0.0.1:${pgPort}/rollback_check`;
    const cli = (command: string) =>
      execFileSync(process.execPath, ['--import', 'tsx', 'messenger/db-cli.ts', command], {
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATABASE_URL: url, LOG_LEVEL: 'info' },
        cwd: path.resolve(__dirname, '../..'),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    const check = new pg.Client({ connectionString: url });
    await check.connect();
    try {
      const tables = async () =>
        (await check.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name NOT LIKE 'knex%' ORDER BY 1")).rows.map((r: { table_name: string }) => r.table_name);
      const applied = async () => (await check.query('SELECT name FROM knex_migrations ORDER BY id')).rows.map((r: { name: string }) => r.name);
      const all = await migrationSource.getMigrations([]);
      assert.ok(all.length >= 6, all.join(','));
      cli('migrate');
      const full = await tables();
      assert.ok(['chat_members', 'chats', 'messages', 'sessions', 'users'].every((t) => full.includes(t)), full.join(','));
      assert.deepEqual(await applied(), all);
      await check.query("INSERT INTO users (user_name, password_hash) VALUES ('gone', 'x')");
      // One migration per rollback, newest first, until nothing is left.
      for (const name of [...all].reverse()) {
        assert.equal(cli('rollback').toString().trim(), `rolled back: ${name}`);
      }
      assert.equal(cli('rollback').toString().trim(), 'nothing to do');
      assert.deepEqual(await tables(), [], 'rollback left tables behind');
      assert.deepEqual(await applied(), []);
      cli('migrate');
      assert.deepEqual(await tables(), full);
      assert.deepEqual(await applied(), all);
      assert.equal(Number((await check.query('SELECT count(*) FROM users')).rows[0].count), 0, 'the database came back empty');
      console.log(`      rollback and migrate again on PostgreSQL ${PG_VERSION}: ${full.length} tables dropped and created again`);
    } finally {
      await check.end();
    }
  });
});
