import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { loadConfig } from '../messenger/config';
import { createDb, type Db } from '../messenger/infra/db';
import { MODE, testEnv } from './helpers/env';
import { harness } from './helpers/harness';
import { freePort, ServiceProcess, tempDir, type LogLine } from './helpers/process';
import { waitUntil } from './helpers/wait';

interface Answer {
  requestId?: string;
  /** When the request was sent and when its answer (or error) came (epoch ms). */
  sentAt?: number;
  doneAt?: number;
  status?: number;
  body?: unknown;
  error?: string;
  hung?: boolean;
}

/** One request on `agent`; never rejects: a connection error or a hang is part of the answer. */
function call(agent: http.Agent, port: number, method: string, path: string, body: object, requestId: string): Promise<Answer> {
  return new Promise((resolve) => {
    const payload = JSON.stringify(body);
    const headers = { 'x-request-id': requestId, 'content-type': 'application/json' };
    const req = http.request({ host: '127.0.0.1', port, method, path, agent, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // Left as text.
        }
        resolve({ status: res.statusCode, body: parsed });
      });
      res.on('error', (err) => resolve({ error: err.message}));
    });
    // Far longer than the grace period: a request still unanswered then has hung.
    req.setTimeout(20_000, () => {
      resolve({ hung: true });
      req.destroy();
    });
    req.on('error', (err) => resolve({ error: (err as NodeJS.ErrnoException).code ?? err.message}));
    req.end(payload);
  });
}

const isListening = (l: LogLine) => l.msg === 'messenger-api listening';

describe('messenger-api as a process (node:cluster workers, SIGTERM)', function () {
  this.timeout(90_000);
  const workers = MODE === 'services' ? 2 : 1;
  let data: { dir: string; remove: () => void } | undefined;
  let service: ServiceProcess | undefined;

  after(() => {
    service?.kill();
    data?.remove();
  });

  let port = 0;
  before(async () => {
    port = await freePort();
    const env: Record<string, string> = {
      PORT: String(port),
      LOG_LEVEL: 'info',
      WORKERS_NUM: String(workers),
      SHUTDOWN_TIMEOUT_MS: '8000',
      // Slow enough hashing (~60 ms) that requests are still in flight well after they were sent.
      BCRYPT_COST: '10',
    };
    if (MODE === 'embedded') {
      // On disk, so what was acknowledged can be read back after the process is gone.
      data = tempDir('messenger-shutdown-');
      env.DATA_DIR = data.dir;
    }
    service = new ServiceProcess('messenger/main.ts', testEnv(env));
    await service.waitFor(isListening, workers, 60_000);
  });

  if (workers > 1) {
    it('GET /metrics counts the requests of every worker, whichever answers', async () => {
      const get = async (path: string) => {
        // A new connection each time, so the cluster spreads them over the workers.
        const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { connection: 'close' } });
        return { status: res.status, text: await res.text() };
      };
      for (let i = 0; i < 10; i++) assert.equal((await get('/ping')).status, 200);
      // A worker's access-log line can reach this process after the response did (a busy machine): wait for all ten.
      const pingLines = () => service?.lines.filter((l) => l.msg === 'request' && l.path === '/ping') ?? [];
      await waitUntil('the access-log lines of the ten pings', async () => pingLines().length >= 10);
      const pids = new Set(pingLines().map((l) => l.pid));
      assert.equal(pids.size, workers, 'both workers served /ping');
      const metrics = await get('/metrics');
      assert.equal(metrics.status, 200);
      assert.match(metrics.text, /^messenger_http_requests_total\{operation="ping",status="200"\} 10$/m);
    });

    it('replaces a worker that dies, on the same port', async () => {
      const s = service as ServiceProcess;
      const [first] = await s.waitFor(isListening, workers);
      process.kill(Number(first.pid), 'SIGKILL');
      const all = await s.waitFor(isListening, workers + 1, 30_000);
      const replacement = all[workers];
      assert.notEqual(replacement.pid, first.pid);
      assert.equal((replacement.address as { port: number }).port, port);
      assert.equal(s.lines.filter((l) => l.msg === 'worker died; starting a new one' && l.workerPid === first.pid).length, 1);
    });
  }

  it(`finishes the requests in flight (${workers} worker(s)): every 201 account is stored, none hangs, the exit is clean`, async () => {
    if (service === undefined) throw new Error('service not started');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    // 16 clients register accounts back to back (bcrypt keeps each request in
    // flight for a while); SIGTERM lands while many are being served.
    const answers: Answer[] = [];
    let n = 0;
    const client = async () => {
      for (;;) {
        const requestId = `burst-${port}-${n++}`;
        const sentAt = Date.now();
        const a = await call(agent, port, 'POST', '/v1/auth/register', { user_name: requestId, password: 'pw' }, requestId);
        answers.push({ ...a, requestId, sentAt, doneAt: Date.now() });
        // Stop at the first refusal: the server is closed to new work.
        if (a.status === undefined) return;
      }
    };
    const clients = Array.from({ length: 16 }, client);
    while (answers.length < 60) await new Promise((r) => setTimeout(r, 10));
    const killedAt = Date.now();
    service.child.kill('SIGTERM');
    await Promise.all(clients);
    const exit = await service.exited;
    agent.destroy();

    assert.deepEqual(exit, { code: 0, signal: null }, `unclean exit; stderr: ${service.stderr.join('')}`);
    assert.deepEqual(answers.filter((a) => a.hung), [], 'a request hung');
    // A request sent well before SIGTERM (the server has read it by then) and
    // not yet answered was in flight: the drain must finish it, never cut it.
    // Only requests sent around or after SIGTERM may find the door closed.
    const inFlight = answers.filter((a) => (a.sentAt ?? Infinity) < killedAt - 250 && (a.doneAt ?? 0) > killedAt);
    const unanswered = answers.filter((a) => a.status === undefined);
    assert.deepEqual(
      unanswered.filter((a) => (a.sentAt ?? Infinity) < killedAt - 250).map((a) => `${a.requestId}: ${a.error ?? '?'} (sent ${killedAt - (a.sentAt ?? 0)} ms before SIGTERM)`),
      [],
      'a request in flight at SIGTERM was cut instead of answered',
    );
    assert.ok(inFlight.length > 0, 'no request was in flight at SIGTERM: the test proved nothing');
    assert.deepEqual([...new Set(inFlight.map((a) => a.status))], [201], 'every request in flight at SIGTERM was answered 201');
    const statuses = new Set(answers.filter((a) => a.status !== undefined).map((a) => a.status));
    assert.deepEqual([...statuses], [201], 'every answered request was served in full');
    const acked = answers.filter((a) => a.status === 201).map((a) => a.requestId ?? '');
    // Served after the process began shutting down (its own log says so) and still answered in full.
    const servedLate = new Set<unknown>();
    const shuttingDown = new Set<unknown>();
    for (const l of service.lines) {
      if (l.msg === 'shutting down') shuttingDown.add(l.pid);
      else if (l.msg === 'request' && shuttingDown.has(l.pid)) servedLate.add(l.requestId);
    }
    const drained = answers.filter((a) => a.status === 201 && servedLate.has(a.requestId));
    assert.ok(drained.length > 0, 'no request in flight at SIGTERM was finished and answered');
    // Every worker alive at SIGTERM shut down cleanly (one that was replaced earlier logged nothing).
    assert.equal(service.lines.filter((l) => l.msg === 'shutdown complete').length, workers);

    let db: Db = harness().infra.db;
    if (MODE === 'embedded') db = await createDb(loadConfig(testEnv({ DATA_DIR: data?.dir ?? '' })));
    try {
      const stored = await db('users').whereIn('user_name', acked).select('user_name');
      assert.equal(stored.length, acked.length, 'an acknowledged account is missing');
    } finally {
      if (MODE === 'embedded') await db.destroy();
    }
  });
});

describe('ordered shutdown of a process (infra/shutdown.ts, real signals)', function () {
  this.timeout(30_000);
  const fixture = 'tests/fixtures/shutdown-resources.ts';

  it('a resource that fails to close is logged, the others still close in reverse order, and the exit is clean', async () => {
    const p = new ServiceProcess(fixture, { FIXTURE: 'fail', SHUTDOWN_TIMEOUT_MS: '5000' });
    try {
      await p.waitFor((l) => l.msg === 'ready');
      p.child.kill('SIGTERM');
      const exit = await p.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, p.stderr.join(''));
      const closes = p.lines.filter((l) => l.msg === 'closed' || l.msg === 'close failed').map((l) => `${String(l.msg)}:${String(l.resource)}`);
      assert.deepEqual(closes, ['closed:http', 'close failed:broken', 'closed:database']);
      const failed = p.lines.find((l) => l.msg === 'close failed');
      assert.match(JSON.stringify(failed?.err), /close refused/);
      assert.equal(p.lines.filter((l) => l.msg === 'shutdown complete').length, 1);
    } finally {
      p.kill();
    }
  });

  it('a resource whose close hangs: the force-exit timer ends the process at SHUTDOWN_TIMEOUT_MS with code 1', async () => {
    const timeoutMs = 1500;
    const p = new ServiceProcess(fixture, { FIXTURE: 'hang', SHUTDOWN_TIMEOUT_MS: String(timeoutMs) });
    try {
      await p.waitFor((l) => l.msg === 'ready');
      const sent = Date.now();
      p.child.kill('SIGTERM');
      const exit = await p.exited;
      const took = Date.now() - sent;
      assert.deepEqual(exit, { code: 1, signal: null }, p.stderr.join(''));
      assert.ok(took >= timeoutMs - 50 && took < timeoutMs + 1500, `exited ${took} ms after SIGTERM, the bound is ${timeoutMs} ms`);
      assert.equal(p.lines.filter((l) => l.msg === 'shutdown timed out, forcing exit').length, 1);
      assert.equal(p.lines.filter((l) => l.msg === 'shutdown complete').length, 0);
      // The ones before the stuck resource were closed; the one after it never was.
      assert.deepEqual(p.lines.filter((l) => l.msg === 'closed').map((l) => l.resource), ['http']);
    } finally {
      p.kill();
    }
  });
});

describe('messenger-api signalled while its modules load', function () {
  this.timeout(120_000);

  it('a SIGTERM while main.ts loads its modules (as it starts loading config, and 0.2 s later) ends in an orderly exit 0, not a kill by the signal', async () => {
    const dir = tempDir('messenger-early-signal-');
    // Preloaded after tsx: says when main.ts first requires ./config, i.e. while its imports load.
    // (A signal before main.ts's first line runs cannot be kept: no JavaScript of ours runs yet.)
    const marker = path.join(dir.dir, 'ready.mjs');
    fs.writeFileSync(
      marker,
      [
        "import { createRequire } from 'node:module';",
        "const Module = createRequire(import.meta.url)('node:module');",
        'const load = Module._load;',
        'let said = false;',
        'Module._load = function (request, ...rest) {',
        "  if (!said && /(^|\\/)config(\\.ts)?$/.test(request)) { said = true; process.stderr.write('loader-ready\\n'); }",
        '  return load.call(this, request, ...rest);',
        '};',
        '',
      ].join('\n'),
    );
    try {
      const outcomes: string[] = [];
      for (const after of [0, 200]) {
        const child = spawn(process.execPath, ['--import', 'tsx', '--import', marker, path.resolve(__dirname, '../messenger/main.ts')], {
          cwd: path.resolve(__dirname, '..'),
          env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...testEnv({ PORT: String(await freePort()), LOG_LEVEL: 'info' }) },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
        let stdout = '';
        let stderr = '';
        child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
        await new Promise<void>((resolve) => {
          child.stderr.setEncoding('utf8').on('data', (c: string) => {
            stderr += c;
            if (stderr.includes('loader-ready')) resolve();
          });
        });
        await new Promise((resolve) => setTimeout(resolve, after));
        const listened = stdout.includes('messenger-api listening');
        child.kill('SIGTERM');
        const exit = await exited;
        outcomes.push(`${after} ms: ${JSON.stringify(exit)}${listened ? ' (had already started)' : ''}, stderr ${JSON.stringify(stderr.replace('loader-ready\n', ''))}`);
        assert.doesNotMatch(stdout, /"level":(50|60)/, `an error was logged: ${stdout}`);
      }
      assert.deepEqual(outcomes, [
        '0 ms: {"code":0,"signal":null}, stderr ""',
        '200 ms: {"code":0,"signal":null}, stderr ""',
      ]);
    } finally {
      dir.remove();
    }
  });
});

describe('messenger-api start-up failures', function () {
  this.timeout(60_000);

  /** A server holding a port, so that the service cannot listen there. */
  async function holdPort(): Promise<{ port: number; release: () => Promise<void> }> {
    const port = await freePort();
    const blocker = http.createServer();
    await new Promise<void>((resolve) => blocker.listen(port, '127.0.0.1', resolve));
    // Idempotent: the test releases it on success, its finally block in any case.
    return { port, release: () => new Promise<void>((resolve) => (blocker.listening ? blocker.close(() => resolve()) : resolve())) };
  }

  it('one process that cannot listen exits with code 1 and says why', async () => {
    const held = await holdPort();
    const p = new ServiceProcess('messenger/main.ts', testEnv({ PORT: String(held.port), LOG_LEVEL: 'info' }));
    try {
      const exit = await p.exited;
      assert.deepEqual(exit, { code: 1, signal: null });
      assert.match(p.stderr.join(''), /messenger-api failed to start: .*EADDRINUSE/);
    } finally {
      p.kill();
      await held.release();
    }
  });

  if (MODE === 'services') {
    it('workers that fail to start are replaced with a growing delay, and serve once they can', async () => {
      const held = await holdPort();
      const p = new ServiceProcess('messenger/main.ts', testEnv({ PORT: String(held.port), LOG_LEVEL: 'info', WORKERS_NUM: '2', SHUTDOWN_TIMEOUT_MS: '3000' }));
      try {
        const deaths = await p.waitFor((l) => l.msg === 'worker died; starting a new one', 4, 30_000);
        // Deaths within a minute double the delay: 500, 1000, 2000, 4000 ms.
        assert.deepEqual(deaths.slice(0, 4).map((l) => l.restartInMs), [500, 1000, 2000, 4000]);
        assert.ok(deaths.every((l) => l.code === 1), JSON.stringify(deaths));
        assert.equal(p.child.exitCode, null, 'the primary keeps running');
        await held.release();
        await p.waitFor((l) => l.msg === 'messenger-api listening', 2, 30_000);
        const res = await fetch(`http://127.0.0.1:${held.port}/ping`);
        assert.equal(res.status, 200);
        p.child.kill('SIGTERM');
        assert.deepEqual(await p.exited, { code: 0, signal: null });
      } finally {
        p.kill();
        await held.release();
      }
    });

    it('a worker that will not stop is killed by the primary after SHUTDOWN_TIMEOUT_MS + 2 s, which exits with code 1', async () => {
      const port = await freePort();
      const timeoutMs = 1500;
      const p = new ServiceProcess('messenger/main.ts', testEnv({ PORT: String(port), LOG_LEVEL: 'info', WORKERS_NUM: '2', SHUTDOWN_TIMEOUT_MS: String(timeoutMs) }));
      let stuck = 0;
      try {
        const listening = await p.waitFor((l) => l.msg === 'messenger-api listening', 2, 60_000);
        stuck = Number(listening[0].pid);
        // A stopped process handles no signal: it cannot drain, nor force its own exit.
        process.kill(stuck, 'SIGSTOP');
        const sent = Date.now();
        p.child.kill('SIGTERM');
        const exit = await p.exited;
        const took = Date.now() - sent;
        assert.deepEqual(exit, { code: 1, signal: null });
        assert.ok(took >= timeoutMs + 2000 - 50 && took < timeoutMs + 5000, `the primary exited ${took} ms after SIGTERM`);
        assert.equal(p.lines.filter((l) => l.msg === 'workers did not stop in time; killing them').length, 1);
        // The other worker stopped by itself, cleanly.
        assert.equal(p.lines.filter((l) => l.msg === 'shutdown complete' && l.pid !== stuck).length, 1);
        await waitUntil('the stuck worker to be gone', async () => !fs.existsSync(`/proc/${stuck}`) || fs.readFileSync(`/proc/${stuck}/stat`, 'utf8').split(' ')[2] === 'Z', 5000);
      } finally {
        if (stuck > 0) {
          try {
            process.kill(stuck, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        p.kill();
      }
    });
  }
});
