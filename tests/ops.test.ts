import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import addFormats from 'ajv-formats';
import knexFactory from 'knex';
import OpenAPIBackend from 'openapi-backend';
import { ConfigError, loadConfig } from '../messenger/config';
import { toWireError } from '../messenger/errors';
import { createDb, DATA_DIR_LOCK, pendingMigrations } from '../messenger/infra/db';
import { roleMetricsPort } from '../messenger/services';
import { serveRoleEndpoints } from '../messenger/services/role-server';
import { swaggerPath } from '../messenger/http/openapi';
import { MODE, databaseUrl, deleteQueues, testEnv } from './helpers/env';
import { harness, startApp, startInfra, type Running } from './helpers/harness';
import { freePort, ServiceProcess, tempDir, type LogLine } from './helpers/process';
import { TcpProxy } from './helpers/tcp-proxy';
import type { BuiltInfra } from '../messenger/infra';
import { waitUntil } from './helpers/wait';
import { openSocket, refused } from './helpers/ws';
import { buildUser } from './helpers/factories';

interface Check {
  status: string;
  latency_ms: number;
  error?: string;
}

/** The value of one sample line of the Prometheus text, 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const wanted = Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`));
    if (wanted) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

async function metrics(app: Running = harness().app): Promise<string> {
  const res = await app.client.get('/metrics').expect(200).expect('Content-Type', /^text\/plain/);
  return res.text;
}

/** What loadConfig refuses in `env` (over an embedded set-up): its problems, none when it loads. */
function configProblems(env: Record<string, string>): string[] {
  try {
    loadConfig({ DATA_DIR: 'memory://', ...env });
    return [];
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems;
  }
}

describe('GET /health', () => {
  it('answers 200 with every backing service in use, each ok with its latency', async () => {
    const res = await harness().app.client.get('/health').expect(200);
    const checks = (res.body as { checks: Record<string, Check> }).checks;
    const expected = MODE === 'services' ? ['postgresql', 'rabbitmq', 'redis'] : ['postgresql'];
    assert.deepEqual(Object.keys(checks).sort(), expected);
    for (const c of Object.values(checks)) {
      assert.equal(c.status, 'ok');
      assert.ok(c.latency_ms >= 0);
    }
  });

  it('answers without a session even with auth on', async () => {
    // No Authorization header at all: the full report, not a 401.
    const res = await harness().app.client.get('/health').expect(200);
    const expected = MODE === 'services' ? ['postgresql', 'rabbitmq', 'redis'] : ['postgresql'];
    assert.deepEqual(Object.keys((res.body as { checks: Record<string, unknown> }).checks).sort(), expected);
  });

  describe('with the database gone', () => {
    let infra: BuiltInfra;
    let app: Running;
    before(async () => {
      infra = await startInfra();
      app = await startApp(infra);
      await infra.db.destroy();
    });
    after(async () => {
      await app.close();
      await infra.shutdown.run();
    });

    it('answers 503 service-unavailable naming postgresql as down, while /ping stays 200', async () => {
      const res = await app.client.get('/health').expect(503);
      const body = res.body as { message: string; checks: Record<string, Check> };
      assert.equal(body.message, 'service-unavailable');
      assert.equal(body.checks.postgresql.status, 'down');
      assert.ok(body.checks.postgresql.error);
      await app.client.get('/ping').expect(200, {});
    });
  });

  if (MODE === 'services') {
    for (const [name, envName, port] of [['redis', 'REDIS_URL', 6379], ['rabbitmq', 'RMQ_URL', 5672]] as const) {
      describe(`with ${name} cut off`, () => {
        const proxy = new TcpProxy('127.0.0.1', port);
        let infra: BuiltInfra;
        let app: Running;
        before(async () => {
          const p = await proxy.up();
          const base = testEnv()[envName];
          const url = new URL(base);
          url.port = String(p);
          infra = await startInfra({ [envName]: url.toString() });
          app = await startApp(infra, { [envName]: url.toString(), DB_TIMEOUT_MS: '1000' });
          await app.client.get('/health').expect(200);
          await proxy.down();
        });
        after(async () => {
          await app.close();
          await infra.shutdown.run();
          await proxy.down();
        });

        it(`answers 503 naming ${name} as down and the others ok`, async () => {
          // The RabbitMQ probe result is reused for a second: wait until /health sees the outage.
          await waitUntil('/health to answer 503', async () => (await app.client.get('/health')).status === 503, 5000);
          const res = await app.client.get('/health').expect(503);
          const checks = (res.body as { checks: Record<string, Check> }).checks;
          assert.equal(checks[name].status, 'down');
          assert.equal(checks.postgresql.status, 'ok');
          const others = Object.entries(checks).filter(([k]) => k !== name);
          for (const [, c] of others) assert.equal(c.status, 'ok');
        });
      });
    }
  }
});

describe('GET /metrics', () => {
  it('counts each answered request by operation and status', async () => {
    const before = await metrics();
    const { client } = harness().app;
    for (let i = 0; i < 3; i++) await client.get('/ping').expect(200);
    const after = await metrics();
    const labels = { operation: 'ping', status: '200' };
    assert.equal(sample(after, 'messenger_http_requests_total', labels) - sample(before, 'messenger_http_requests_total', labels), 3);
    assert.equal(
      sample(after, 'messenger_http_request_duration_seconds_count', labels) -
        sample(before, 'messenger_http_request_duration_seconds_count', labels),
      3,
    );
    // Buckets are cumulative: the +Inf one holds every request.
    assert.equal(
      sample(after, 'messenger_http_request_duration_seconds_bucket', { ...labels, le: '+Inf' }),
      sample(after, 'messenger_http_request_duration_seconds_count', labels),
    );
  });

  it('counts a request to a path that matches no operation as unrouted, with the status it got', async () => {
    const labels = { operation: 'unrouted', status: '401' };
    const before = sample(await metrics(), 'messenger_http_requests_total', labels);
    await harness().app.client.get('/v1/nowhere').expect(401, { message: 'auth-failed' });
    assert.equal(sample(await metrics(), 'messenger_http_requests_total', labels) - before, 1);
  });

  it('counts WebSocket upgrades (GET /v1/events) as openEvents with the status they got, 101 and refusals alike', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const count = async (status: string) => sample(await metrics(), 'messenger_http_requests_total', { operation: 'openEvents', status });
    const [opened, refusedBefore] = [await count('101'), await count('401')];
    const s = await openSocket(client.port, { session: u.session });
    await s.close();
    assert.equal((await refused(client.port, { session: '0'.repeat(32) })).status, 401);
    assert.equal(await count('101'), opened + 1, 'the upgrade that opened a socket was not counted');
    assert.equal(await count('401'), refusedBefore + 1, 'the refused upgrade was not counted');
  });

  it('reports event-loop lag, process memory, the database pool and the search task metrics', async () => {
    const text = await metrics();
    for (const name of [
      'nodejs_eventloop_lag_seconds',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes',
      'messenger_db_pool_connections',
      'messenger_search_tasks_total',
      'messenger_search_task_duration_seconds',
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} missing`);
    }
    assert.ok(sample(text, 'process_resident_memory_bytes') > 0);
  });

  describe('with METRICS_TOKEN set', () => {
    const token = 'metrics-token-0123456789';
    let app: Running;
    before(async () => {
      app = await startApp(harness().infra, { METRICS_TOKEN: token });
    });
    after(() => app.close());

    it('answers 401 auth-failed without the bearer token', async () => {
      await app.client.get('/metrics').expect(401, { message: 'auth-failed' });
    });

    it('answers 401 auth-failed for a wrong token', async () => {
      await app.client.get('/metrics').set('Authorization', `Bearer ${token}x`).expect(401, { message: 'auth-failed' });
    });

    it('answers 200 with the right token', async () => {
      const res = await app.client.get('/metrics').set('Authorization', `Bearer ${token}`).expect(200);
      assert.match(res.text, /messenger_http_requests_total/);
    });

    it('answers 401 auth-failed to more than one Authorization header, the right token first or not, as every other path does', async () => {
      // superagent sends an array as one header line per value. Before, the first header was taken.
      const several = (values: string[]) => values as unknown as string;
      for (const headers of [[`Bearer ${token}`, `Bearer ${token}`], [`Bearer ${token}`, 'Bearer x'], ['Bearer x', `Bearer ${token}`]]) {
        await app.client.get('/metrics').set('Authorization', several(headers)).expect(401, { message: 'auth-failed' });
      }
    });

    it('a worker role\'s /metrics answers 401 auth-failed to more than one Authorization header too', async () => {
      const infra = harness().infra;
      const port = 21500 + (process.pid % 400);
      const served = await serveRoleEndpoints({ ...infra, config: { ...infra.config, metricsToken: token } }, false, port);
      try {
        // Raw headers: one Authorization line per value.
        const status = (...values: string[]) =>
          new Promise<number>((resolve, reject) => {
            http.get({ host: '127.0.0.1', port, path: '/metrics', headers: ['Host', `127.0.0.1:${port}`, ...values.flatMap((v) => ['Authorization', v])] }, (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            }).on('error', reject);
          });
        assert.equal(await status(`Bearer ${token}`), 200);
        assert.equal(await status(`Bearer ${token}`, 'Bearer x'), 401);
        assert.equal(await status(`Bearer ${token}`, `Bearer ${token}`), 401);
      } finally {
        await served.drain(Date.now());
      }
    });
  });

  it('refuses a METRICS_TOKEN shorter than 16 characters at start-up', () => {
    assert.throws(() => loadConfig(testEnv({ METRICS_TOKEN: 'short' })), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /METRICS_TOKEN must be 16 to 256 printable characters/);
      return true;
    });
  });

  it('PRESENCE_TTL_SECONDS is 45 by default and refused past 50 (an account of a dead instance must be offline within SPEC\'s 60 s)', () => {
    assert.equal(loadConfig(testEnv({})).realtime.presenceTtlSeconds, 45);
    assert.equal(loadConfig(testEnv({ PRESENCE_TTL_SECONDS: '6' })).realtime.presenceTtlSeconds, 6);
    for (const [value, got] of [['51', '51'], ['2', '2']]) {
      assert.throws(() => loadConfig(testEnv({ PRESENCE_TTL_SECONDS: value })), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.deepEqual(err.problems, [`PRESENCE_TTL_SECONDS must be between 3 and 50, got ${got}`]);
        return true;
      });
    }
  });

  it('refuses POSTGRES_HOSTS without a usable first host at start-up, naming it; takes the first of a list', () => {
    for (const hosts of [',,,', 'db host', ' ,db2']) {
      assert.throws(() => loadConfig(testEnv({ DATABASE_URL: '', POSTGRES_HOSTS: hosts })), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.deepEqual(err.problems, [`POSTGRES_HOSTS must start with a host name or address (db, 10.0.0.5, db1,db2), got "${hosts}"`]);
        return true;
      });
    }
    assert.equal(loadConfig(testEnv({ DATABASE_URL: '', POSTGRES_HOSTS: 'db1,db2', POSTGRES_DB: 'm' })).databaseUrl, 'postgres://postgres@db1:5432/m');
  });

  it('refuses a DATABASE_URL, REDIS_URL or RMQ_URL without a host (or DATABASE_URL without a database) at start-up, naming the setting and never echoing the URL', () => {
    assert.deepEqual(configProblems({ DATABASE_URL: 'postgres://' }), [
      'DATABASE_URL names no host (such as postgres://user:password@db:5432/messenger)',
      'DATABASE_URL names no database (such as postgres://user:password@db:5432/messenger)',
    ]);
    assert.deepEqual(configProblems({ DATABASE_URL: 'postgresql://me:secret@db:5432' }), ['DATABASE_URL names no database (such as postgres://user:password@db:5432/messenger)']);
    assert.deepEqual(configProblems({ DATABASE_URL: 'postgres://me:secret@db:99999/m' }), [
      'DATABASE_URL is not a valid URL (such as postgres://user:password@db:5432/messenger; percent-encode @ : / in the password)',
    ]);
    assert.deepEqual(configProblems({ DATABASE_URL: 'mysql://db/m' }), ['DATABASE_URL must start with postgres:// or postgresql://, got "mysql://"']);
    assert.deepEqual(configProblems({ REDIS_URL: 'redis://' }), ['REDIS_URL names no host (such as redis://redis:6379)']);
    assert.deepEqual(configProblems({ REDIS_URL: 'redis://cache:6379/sessions' }), [
      'REDIS_URL must end with the host or a database number (/0 to /15) (such as redis://redis:6379)',
    ]);
    assert.deepEqual(configProblems({ RMQ_URL: 'amqp://' }), ['RMQ_URL names no host (such as amqp://user:password@rabbitmq:5672)']);
    assert.deepEqual(configProblems({ RABBITMQ_URL: 'amqps://' }), ['RABBITMQ_URL names no host (such as amqp://user:password@rabbitmq:5672)']);
    // What works: a host and a database, a socket directory, a Redis database number, a vhost.
    for (const env of <Record<string, string>[]>[
      { DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/messenger' },
      { DATABASE_URL: 'postgresql:///messenger?host=/var/run/postgresql' },
      { REDIS_URL: 'redis://:pw@cache:6379/2' },
      { REDIS_URL: 'rediss://cache' },
      { RMQ_URL: 'amqp://guest:guest@mq:5672/%2F' },
    ]) {
      assert.deepEqual(configProblems(env), [], JSON.stringify(env));
    }
  });

  // Until 2026-12-07 these started: APPS=, ran no app (every operation 404), and a queue name RabbitMQ
  // refuses stopped the worker with exit 1 and the broker's ACCESS_REFUSED once connected.
  it('refuses an APPS that names no app and SEARCH_QUEUE or SYNC_QUEUE names RabbitMQ refuses, naming the setting', () => {
    assert.match(configProblems({ APPS: ',' }).join('\n'), /^APPS names no app \(","\); leave it unset for all of them: auth, /);
    assert.match(configProblems({ APPS: ' , ' }).join('\n'), /^APPS names no app/);
    for (const [name, value] of [
      ['SEARCH_QUEUE', 'amq.search'],
      ['SEARCH_QUEUE', 'q'.repeat(251)],
      ['SYNC_QUEUE', ' messenger.sync'],
      ['SYNC_QUEUE', 'sync\nqueue'],
    ]) {
      assert.deepEqual(
        configProblems({ [name]: value }),
        [`${name} must be a RabbitMQ queue name of 1 to 250 bytes (its dead-letter queue adds ".dead"), not starting with "amq." (reserved), without surrounding spaces or control characters`],
        `${name}=${JSON.stringify(value)}`,
      );
    }
    assert.deepEqual(configProblems({ SEARCH_QUEUE: 'q'.repeat(250), SYNC_QUEUE: 'prod.sync-2', APPS: 'auth,chats' }), []);
  });

  it('messenger-db with DATABASE_URL=postgres:// stops with exit code 2 naming DATABASE_URL, without connecting', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'messenger/db-cli.ts', 'status'], {
      cwd: path.resolve(__dirname, '..'),
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATABASE_URL: 'postgres://' },
      encoding: 'utf8',
    });
    assert.equal(r.status, 2, r.stderr);
    assert.equal(
      r.stderr,
      'invalid configuration:\n  - DATABASE_URL names no host (such as postgres://user:password@db:5432/messenger)\n  - DATABASE_URL names no database (such as postgres://user:password@db:5432/messenger)\n',
    );
  });

  it('BCRYPT_THREADS defaults to one thread per core across all web workers, and an explicit value wins', () => {
    const cores = os.availableParallelism();
    const services = { DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/x', REDIS_URL: 'redis://127.0.0.1:6379' };
    assert.equal(loadConfig(testEnv()).bcryptThreads, cores, 'one worker: a thread per core');
    for (const workers of [1, 2, 3, cores, 2 * cores, 64]) {
      const threads = loadConfig(testEnv({ ...services, WORKERS_NUM: String(workers) })).bcryptThreads;
      assert.ok(threads >= 1 && workers * threads >= cores, `${workers} workers: every core can hash (${threads} each)`);
      assert.ok(workers * (threads - 1) < cores, `${workers} workers: no more threads than the cores need (${threads} each)`);
    }
    assert.equal(loadConfig(testEnv({ ...services, WORKERS_NUM: '2', BCRYPT_THREADS: '3' })).bcryptThreads, 3);
  });

  it('takes SYNC_FLUSH_MS from 0 (batches back to back) to 60000 and refuses what is outside', () => {
    assert.equal(loadConfig(testEnv({ SYNC_FLUSH_MS: '0' })).sync.flushMs, 0);
    assert.equal(loadConfig(testEnv({ SYNC_FLUSH_MS: '60000' })).sync.flushMs, 60000);
    for (const bad of ['-1', '60001', '1.5', 'soon']) {
      assert.throws(() => loadConfig(testEnv({ SYNC_FLUSH_MS: bad })), (err: unknown) => err instanceof ConfigError && /SYNC_FLUSH_MS/.test(err.message), bad);
    }
  });
});

describe('GET /docs and /swagger.yml', () => {
  it('swagger.yml is a valid OpenAPI 3.0 document whose schemas all compile (the server starts without re-checking it)', async () => {
    const api = new OpenAPIBackend({ definition: swaggerPath(), strict: true, validate: true, customizeAjv: (ajv) => addFormats(ajv, ['date-time']) });
    await api.init();
    assert.ok(api.getOperations().length >= 15);
  });

  it('GET /swagger.yml answers the OpenAPI document as YAML', async () => {
    const res = await harness().app.client.get('/swagger.yml').expect(200).expect('Content-Type', /yaml/);
    assert.equal(res.text, fs.readFileSync(swaggerPath(), 'utf8'));
  });

  it('GET /docs answers an HTML page that loads only local files', async () => {
    const res = await harness().app.client.get('/docs').expect(200).expect('Content-Type', /^text\/html/);
    const sources = [...res.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
    assert.ok(sources.length >= 4);
    for (const s of sources) assert.match(s, /^\/docs\/[\w.-]+$/, `${s} is not served by this API`);
  });

  it('serves every file the page loads, from node_modules, with a one-hour cache', async () => {
    const res = await harness().app.client.get('/docs').expect(200);
    for (const [, src] of res.text.matchAll(/(?:src|href)="([^"]+)"/g)) {
      const asset = await harness().app.client.get(src).buffer(true).expect(200).expect('Cache-Control', 'public, max-age=3600');
      assert.ok(Number(asset.headers['content-length']) > 0 || (asset.text ?? '').length > 0, `${src} is empty`);
    }
    const initializer = await harness().app.client.get('/docs/swagger-initializer.js').expect(200);
    assert.match(initializer.text, /url: '\/swagger\.yml'/);
  });

  it('answers 401 for a file under /docs that is not one of the page assets', async () => {
    await harness().app.client.get('/docs/package.json').expect(401, { message: 'auth-failed' });
  });
});

describe('the embedded data directory (DATA_DIR) belongs to one process', function () {
  this.timeout(60_000);
  const isListening = (l: LogLine) => l.msg === 'messenger-api listening';

  it('a second messenger-api on the same DATA_DIR stops at start-up naming the holder; the first keeps what it acknowledged', async () => {
    const data = tempDir('messenger-datadir-');
    const env = (port: number) => ({ PORT: String(port), DATA_DIR: data.dir, LOG_LEVEL: 'info', BCRYPT_COST: '4' });
    const first = new ServiceProcess('messenger/main.ts', env(await freePort()));
    let second: ServiceProcess | undefined;
    try {
      const [listening] = await first.waitFor(isListening);
      const port = (listening.address as { port: number }).port;
      second = new ServiceProcess('messenger/main.ts', env(await freePort()));
      const started = second.waitFor(isListening).then(() => 'listening' as const, () => 'stopped' as const);
      assert.equal(await started, 'stopped', 'the second process started on a directory in use');
      // Exit code 2, as every other refusal to start as set up (1 is a crash a supervisor retries).
      assert.deepEqual(await second.exited, { code: 2, signal: null });
      assert.match(
        second.stderr.join(''),
        new RegExp(`^messenger-api cannot start: DATA_DIR .* is in use by another process \\(pid ${first.child.pid}\\)[^\\n]*\\n$`),
      );
      // messenger-db refuses the directory in use the same way.
      const cli = spawnSync(process.execPath, ['--import', 'tsx', 'messenger/db-cli.ts', 'status'], {
        cwd: path.resolve(__dirname, '..'),
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATA_DIR: data.dir },
        encoding: 'utf8',
      });
      assert.equal(cli.status, 2, cli.stderr);
      assert.match(cli.stderr, new RegExp(`^messenger-db cannot start: DATA_DIR .* is in use by another process \\(pid ${first.child.pid}\\)[^\\n]*\\n$`));

      const res = await fetch(`http://127.0.0.1:${port}/v1/auth/register`, {
        method: 'POST',
        body: JSON.stringify({ user_name: 'datadir-owner', password: 'secret1' }),
      });
      assert.equal(res.status, 201);
      first.child.kill('SIGTERM');
      assert.deepEqual(await first.exited, { code: 0, signal: null }, first.stderr.join(''));
      assert.equal(fs.existsSync(path.join(data.dir, DATA_DIR_LOCK)), false, 'the lock outlived its process');

      // Free again, and what the first process acknowledged is there.
      const db = await createDb(loadConfig(testEnv({ DATA_DIR: data.dir, DATABASE_URL: '' })));
      try {
        assert.equal((await db('users').where({ user_name: 'datadir-owner' })).length, 1);
      } finally {
        await db.destroy();
      }
    } finally {
      first.kill();
      second?.kill();
      data.remove();
    }
  });

  // Until 2026-12-07: exit 1 with "messenger-db failed: EEXIST: file already exists, mkdir ..." and "... failed: [object Object]".
  it('a DATA_DIR that is a file, under a file, or read-only stops messenger-db with exit code 2 and one line naming it', () => {
    const data = tempDir('messenger-baddir-');
    const readOnly = path.join(data.dir, 'read-only');
    try {
      const file = path.join(data.dir, 'a-file');
      fs.writeFileSync(file, 'x');
      // Read-only for everyone; root may still write the lock, but PGlite checks the mode itself.
      fs.mkdirSync(readOnly);
      fs.chmodSync(readOnly, 0o555);
      for (const [dir, said] of [
        [file, `DATA_DIR ${file} is not a directory`],
        [path.join(file, 'sub'), `DATA_DIR ${path.join(file, 'sub')} cannot be created (ENOTDIR): create it, or set DATA_DIR to a writable directory`],
        [readOnly, `DATA_DIR ${readOnly} is not writable (EACCES): the embedded database writes there; set DATA_DIR to a writable directory, or memory:// to keep nothing`],
      ]) {
        const r = spawnSync(process.execPath, ['--import', 'tsx', 'messenger/db-cli.ts', 'migrate'], {
          cwd: path.resolve(__dirname, '..'),
          env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATA_DIR: dir },
          encoding: 'utf8',
        });
        assert.deepEqual([r.status, r.stderr], [2, `messenger-db cannot start: ${said}\n`]);
      }
      assert.equal(fs.existsSync(path.join(readOnly, DATA_DIR_LOCK)), false, 'the lock outlived the failed start');
    } finally {
      fs.chmodSync(readOnly, 0o755);
      data.remove();
    }
  });

  it('a lock left by a process that no longer runs is taken over, and given back on close', async () => {
    const data = tempDir('messenger-datadir-');
    try {
      const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
      fs.writeFileSync(path.join(data.dir, DATA_DIR_LOCK), `${gone.stdout}\n`);
      const db = await createDb(loadConfig(testEnv({ DATA_DIR: data.dir, DATABASE_URL: '' })));
      assert.equal(fs.readFileSync(path.join(data.dir, DATA_DIR_LOCK), 'utf8').trim(), String(process.pid));
      await db.destroy();
      assert.equal(fs.existsSync(path.join(data.dir, DATA_DIR_LOCK)), false);
    } finally {
      data.remove();
    }
  });
});

describe('messenger-db rollback', function () {
  this.timeout(120_000);

  it('messenger-db on a PostgreSQL it cannot reach says so in one line on stderr, and knex prints no error and stack of its own', async () => {
    const dead = await freePort();
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'messenger/db-cli.ts', 'migrate'], {
      cwd: path.resolve(__dirname, '..'),
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATABASE_URL: `postgres://postgres@127.0.0.1:${dead}/nowhere` },
      encoding: 'utf8',
    });
    assert.equal(r.status, 1);
    assert.equal(
      r.stderr,
      `messenger-db failed: connect ECONNREFUSED 127.0.0.1:${dead}: is PostgreSQL at 127.0.0.1:${dead} running and reachable? Start it, or set DATABASE_URL to where it runs\n`,
    );
    assert.equal(r.stdout, '', 'knex printed its own error and stack');
  });

  /** messenger-db run with exactly `env` (plus PATH and HOME). */
  const dbCli = (args: string[], env: Record<string, string>) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'messenger/db-cli.ts', ...args], {
      cwd: path.resolve(__dirname, '..'),
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      encoding: 'utf8',
    });

  it('messenger-db with ENV_FILE naming a file that does not exist stops with exit code 2 naming it, as every other entrypoint does', () => {
    const missing = path.join(os.tmpdir(), `messenger-no-such-${process.pid}.env`);
    const r = dbCli(['migrate'], { ENV_FILE: missing, DATA_DIR: 'memory://' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /ENV_FILE is ".*messenger-no-such-.*\.env", which does not exist/);
  });

  it('messenger-db with a setting that cannot work stops with exit code 2 listing it', () => {
    const r = dbCli(['migrate'], { PORT: 'abc', DATA_DIR: 'memory://' });
    assert.equal(r.status, 2, r.stderr);
    assert.equal(r.stderr, 'invalid configuration:\n  - PORT must be a whole number, got "abc"\n');
  });

  it('messenger-db status lists each migration as pending or applied, writing nothing, and says what to run', () => {
    const data = tempDir('messenger-status-');
    try {
      const env = { DATA_DIR: data.dir, LOG_LEVEL: 'warn' };
      const before = dbCli(['status'], env);
      assert.equal(before.status, 0, before.stderr);
      const lines = before.stdout.trim().split('\n');
      assert.equal(lines[0], 'pending  001_core');
      assert.equal(lines.at(-2), 'pending  013_name_prefix_key');
      assert.match(lines.at(-1) ?? '', /^13 pending: run messenger-db migrate/);
      assert.equal(dbCli(['status'], env).stdout, before.stdout, 'status applied something');
      // Until 2026-12-07 status on an embedded DATA_DIR without a database created one there.
      assert.deepEqual(fs.readdirSync(data.dir), [], 'status wrote to DATA_DIR');
      assert.equal(dbCli(['migrate'], env).status, 0);
      const after = dbCli(['status'], env);
      assert.equal(after.status, 0, after.stderr);
      assert.match(after.stdout, /^applied {2}001_core\n[^]*applied {2}013_name_prefix_key\nup to date\n$/);
      assert.doesNotMatch(after.stdout, /^pending/m);
    } finally {
      data.remove();
    }
  });

  // Until 2026-12-07 extra arguments were ignored: `rollback 3` undid one migration and exited 0.
  it('messenger-db with no command, an unknown one or extra arguments prints its usage, naming status, with exit code 2', () => {
    for (const args of [[], ['statsu'], ['rollback', '3'], ['migrate', 'now']]) {
      const r = dbCli(args, { DATA_DIR: 'memory://' });
      assert.equal(r.status, 2);
      assert.equal(r.stderr, 'usage: messenger-db migrate|rollback|status\n');
    }
  });

  it('undoes only the newest migration, keeping the data, however many were applied together; run again it undoes the next', async () => {
    const data = tempDir('messenger-rollback-');
    const env = { DATA_DIR: data.dir, LOG_LEVEL: 'warn' };
    const cli = (command: string) => {
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'messenger/db-cli.ts', command], {
        cwd: path.resolve(__dirname, '..'),
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.trim();
    };
    try {
      // One migrate applies every migration in one knex batch, as a fresh deployment's does.
      assert.match(cli('migrate'), /^applied: 001_core, .*, 013_name_prefix_key$/);
      const db = await createDb(loadConfig(testEnv({ ...env, DATABASE_URL: '' })));
      try {
        await db('users').insert({ user_name: 'kept-by-rollback', password_hash: 'x' });
      } finally {
        await db.destroy();
      }
      assert.equal(cli('rollback'), 'rolled back: 013_name_prefix_key');
      assert.equal(cli('rollback'), 'rolled back: 012_chat_last_message_json');
      const after = await createDb(loadConfig(testEnv({ ...env, DATABASE_URL: '' })));
      try {
        assert.equal((await after('users').where({ user_name: 'kept-by-rollback' })).length, 1, 'the accounts were dropped');
        assert.deepEqual(await pendingMigrations(after), ['012_chat_last_message_json', '013_name_prefix_key']);
      } finally {
        await after.destroy();
      }
      assert.equal(cli('migrate'), 'applied: 012_chat_last_message_json, 013_name_prefix_key');
    } finally {
      data.remove();
    }
  });
});

/** How the process ended, or `running` when it still runs after `ms`. */
function exitWithin(p: ServiceProcess, ms: number): Promise<Awaited<ServiceProcess['exited']> | 'running'> {
  return Promise.race([p.exited, new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), ms))]);
}

if (MODE === 'services') {
  describe('a role started against a database without its migrations (services mode)', function () {
    this.timeout(60_000);
    const bare = new URL(databaseUrl());
    bare.pathname = `${bare.pathname}_bare`;
    const syncQueue = `${testEnv().SEARCH_QUEUE}.bare-sync`;
    const admin = () => {
      const u = new URL(databaseUrl());
      u.pathname = '/postgres';
      return knexFactory({ client: 'pg', connection: u.toString(), pool: { min: 0, max: 1 } });
    };
    before(async () => {
      const a = admin();
      try {
        await a.raw(`CREATE DATABASE ${bare.pathname.slice(1)}`);
      } finally {
        await a.destroy();
      }
    });
    after(async () => {
      await deleteQueues(syncQueue);
      const a = admin();
      try {
        await a.raw(`DROP DATABASE IF EXISTS ${bare.pathname.slice(1)} WITH (FORCE)`);
      } finally {
        await a.destroy();
      }
    });

    const env = async (extra: Record<string, string> = {}) =>
      testEnv({ DATABASE_URL: bare.toString(), PORT: String(await freePort()), LOG_LEVEL: 'warn', ...extra });

    for (const [script, extra] of [
      ['messenger/main.ts', {}],
      // Two workers: the primary stops too (it used to fork a new worker after each failure, for ever).
      ['messenger/main.ts', { WORKERS_NUM: '2' }],
      ['messenger/consumer.ts', {}],
      ['messenger/synchronizer.ts', { MESSAGE_STORAGE_TYPE: 'rabbitmq', SYNC_QUEUE: syncQueue }],
    ] as const) {
      it(`${script}${'WORKERS_NUM' in extra ? ' with WORKERS_NUM=2' : ''} stops at start-up (exit 2) naming the missing migrations and messenger-db migrate, and writes nothing`, async () => {
        const p = new ServiceProcess(script, await env(extra));
        try {
          const exit = await exitWithin(p, 20_000);
          assert.notEqual(exit, 'running', 'it started on a database without tables');
          assert.deepEqual(exit, { code: 2, signal: null });
          assert.match(p.stderr.join(''), /cannot start:\n {2}- the database lacks migrations 001_core, .*013_name_prefix_key: run messenger-db migrate/);
        } finally {
          p.kill();
        }
        const db = knexFactory({ client: 'pg', connection: bare.toString(), pool: { min: 0, max: 1 } });
        try {
          const tables = (await db.raw("select count(*)::int as n from pg_tables where schemaname = 'public'")) as { rows: { n: number }[] };
          assert.equal(tables.rows[0].n, 0);
        } finally {
          await db.destroy();
        }
      });
    }
  });
}


describe('logs while PostgreSQL cannot be reached', function () {
  this.timeout(60_000);

  it('every request answers 503 and the process writes only JSON lines: nothing on stderr, no stack per failed connection', async () => {
    const dead = await freePort();
    const p = new ServiceProcess(
      'messenger/main.ts',
      testEnv({ DATABASE_URL: `postgres://postgres@127.0.0.1:${dead}/nowhere`, REDIS_URL: '', RMQ_URL: '', PORT: String(await freePort()), LOG_LEVEL: 'info' }),
    );
    try {
      const [listening] = await p.waitFor((l) => l.msg === 'messenger-api listening');
      const port = (listening.address as { port: number }).port;
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`http://127.0.0.1:${port}/v1/auth/register`, { method: 'POST', body: JSON.stringify({ user_name: `pg-away-${i}`, password: 'secret1' }) });
        assert.equal(res.status, 503);
      }
      await p.waitFor((l) => l.msg === 'backend unavailable', 3);
      assert.equal(p.stderr.join(''), '', 'something was written to stderr');
      assert.deepEqual(p.lines.filter((l) => l.level === undefined), [], 'a stdout line was not JSON');
    } finally {
      p.kill();
    }
  });
});

describe('logs while Redis cannot be reached', function () {
  this.timeout(60_000);

  // Until 2026-12-07 the line said ioredis's "Stream isn't writeable and enableOfflineQueue options is false".
  it('a request that meets the outage logs "backend unavailable" naming redis and why, in the service\'s words', async () => {
    const dead = await freePort();
    const p = new ServiceProcess(
      'messenger/main.ts',
      testEnv({ DATABASE_URL: '', DATA_DIR: 'memory://', REDIS_URL: `redis://127.0.0.1:${dead}`, RMQ_URL: '', PORT: String(await freePort()), LOG_LEVEL: 'info' }),
    );
    try {
      const [listening] = await p.waitFor((l) => l.msg === 'messenger-api listening');
      const port = (listening.address as { port: number }).port;
      const res = await fetch(`http://127.0.0.1:${port}/v1/auth/login`, { method: 'POST', body: JSON.stringify({ user_name: 'nobody', password: 'secret1' }) });
      assert.equal(res.status, 503);
      const requestId = res.headers.get('x-request-id');
      const [line] = await p.waitFor((l) => l.msg === 'backend unavailable' && l.requestId === requestId);
      assert.deepEqual([line.backend, line.err], ['redis', 'not connected (reconnecting)']);
      assert.doesNotMatch(JSON.stringify(p.lines), /enableOfflineQueue|Stream isn't writeable/);
    } finally {
      p.kill();
    }
  });
});

describe('a settings file named by ENV_FILE', function () {
  this.timeout(60_000);

  it('messenger-api with ENV_FILE naming a file that does not exist stops (exit 2) naming it, instead of starting on the defaults', async () => {
    const missing = path.join(os.tmpdir(), `messenger-no-such-${process.pid}.env`);
    const p = new ServiceProcess('messenger/main.ts', { ENV_FILE: missing, DATA_DIR: 'memory://', PORT: String(await freePort()), LOG_LEVEL: 'info' });
    try {
      const exit = await exitWithin(p, 20_000);
      assert.notEqual(exit, 'running', 'it started on the defaults');
      assert.deepEqual(exit, { code: 2, signal: null });
      assert.match(p.stderr.join(''), new RegExp(`ENV_FILE is "${missing.replace(/[.]/g, '\\.')}", which does not exist`));
    } finally {
      p.kill();
    }
  });
});

describe('a settings file named by ENV_FILE that is a directory', function () {
  this.timeout(60_000);

  it('messenger-api stops (exit 2) saying ENV_FILE names a directory, not with a stack trace', async () => {
    const dir = tempDir('messenger-envdir-');
    const p = new ServiceProcess('messenger/main.ts', { ENV_FILE: dir.dir, DATA_DIR: 'memory://', PORT: String(await freePort()), LOG_LEVEL: 'info' });
    try {
      const exit = await exitWithin(p, 20_000);
      assert.deepEqual(exit, { code: 2, signal: null });
      assert.equal(p.stderr.join(''), `invalid configuration:\n  - ENV_FILE is "${dir.dir}", which is a directory, not a file\n`);
    } finally {
      p.kill();
      dir.remove();
    }
  });
});

describe('a PostgreSQL that refuses the database or the user of DATABASE_URL', () => {
  it('is a backing service that cannot be used (503 service-unavailable), not an internal error (500)', () => {
    for (const [code, message] of [
      ['3D000', 'database "nowhere" does not exist'],
      ['28000', 'role "nobody" does not exist'],
      ['28P01', 'password authentication failed for user "postgres"'],
    ]) {
      const err = Object.assign(new Error(message), { code, severity: 'FATAL' });
      assert.deepEqual(toWireError(err), { status: 503, code: 'service-unavailable', unexpected: false }, code);
    }
  });

  if (MODE === 'services') {
    it('messenger-db migrate says to create the database first; messenger-api answers 503 until it exists, with a hint in its log', async function () {
      this.timeout(60_000);
      const u = new URL(databaseUrl());
      u.pathname = `/opsx_missing_${process.pid}`;
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'messenger/db-cli.ts', 'migrate'], {
        cwd: path.resolve(__dirname, '..'),
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATABASE_URL: u.toString() },
        encoding: 'utf8',
      });
      assert.equal(r.status, 1);
      assert.equal(
        r.stderr,
        `messenger-db failed: database "opsx_missing_${process.pid}" does not exist: create the database first (createdb opsx_missing_${process.pid}, or CREATE DATABASE), then run messenger-db migrate\n`,
      );
      const port = await freePort();
      const p = new ServiceProcess('messenger/main.ts', { ...testEnv({ DATABASE_URL: u.toString(), PORT: String(port), LOG_LEVEL: 'info' }) });
      try {
        const [warn] = await p.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('could not check the database for pending migrations'));
        assert.match(String(warn.hint), /create the database first \(createdb opsx_missing_/);
        await p.waitFor((l) => l.msg === 'messenger-api started');
        const res = await fetch(`http://127.0.0.1:${port}/v1/auth/register`, { method: 'POST', body: JSON.stringify({ user_name: 'nodb', password: 'secret1' }) });
        assert.equal(res.status, 503);
        assert.deepEqual(await res.json(), { message: 'service-unavailable' });
      } finally {
        p.kill();
      }
    });
  }
});

describe('an impossible combination of apps (APPS)', function () {
  this.timeout(60_000);

  it('messenger-api stops with exit code 2 naming the missing app, in one line, as for any setting that cannot work', async () => {
    const p = new ServiceProcess('messenger/main.ts', testEnv({ APPS: 'auth,messages', PORT: String(await freePort()), LOG_LEVEL: 'info' }));
    try {
      const exit = await exitWithin(p, 30_000);
      assert.deepEqual(exit, { code: 2, signal: null });
      assert.equal(p.stderr.join(''), 'messenger-api cannot start: app "messages" requires app "chats", which is not in APPS\n');
    } finally {
      p.kill();
    }
  });
});

describe('HOST', function () {
  this.timeout(60_000);

  it('refuses a HOST that is neither an IP address nor a host name at start-up, naming it; accepts addresses and names', () => {
    for (const bad of ['256.1.1.1', '127.0.0.1:8080', '[::1]', 'http://example.com', 'bad host', '-x.example', '1.2.3']) {
      assert.throws(() => loadConfig(testEnv({ HOST: bad })), (err: unknown) => {
        assert.ok(err instanceof ConfigError, bad);
        assert.match(err.message, /HOST must be an IP address/);
        assert.ok(err.message.includes(`"${bad}"`), err.message);
        return true;
      });
    }
    for (const good of ['0.0.0.0', '127.0.0.1', '::', '::1', 'fe80::1', 'localhost', 'web1', 'api.example.com', 'api.example.com.']) {
      assert.equal(loadConfig(testEnv({ HOST: good })).host, good);
    }
  });

  it('messenger-api with HOST=256.1.1.1 stops with exit code 2 (a setting that cannot work), not 1 at listen', async () => {
    const p = new ServiceProcess('messenger/main.ts', { HOST: '256.1.1.1', DATA_DIR: 'memory://', PORT: String(21000 + (process.pid % 500)), LOG_LEVEL: 'info' });
    try {
      const exit = await exitWithin(p, 30_000);
      assert.deepEqual(exit, { code: 2, signal: null });
      assert.match(p.stderr.join(''), /HOST must be an IP address/);
    } finally {
      p.kill();
    }
  });
});

describe('the ports of /health and /metrics in the worker roles', () => {
  it('with METRICS_PORT unset, a search worker and a synchronizer get different ports (9464, 9465), so both run on one host; set, it is used', () => {
    const unset = loadConfig(testEnv({ METRICS_PORT: '' }));
    assert.equal(roleMetricsPort(unset, ['search-worker']), 9464);
    assert.equal(roleMetricsPort(unset, ['synchronizer']), 9465);
    const set = loadConfig(testEnv({ METRICS_PORT: '9600' }));
    assert.equal(roleMetricsPort(set, ['search-worker']), 9600);
    assert.equal(roleMetricsPort(set, ['synchronizer']), 9600);
  });
});
