import assert from 'node:assert/strict';
import http from 'node:http';
import { loadConfig } from '../messenger/config';
import { createDb, type Db } from '../messenger/infra/db';
import { MODE, testEnv } from './helpers/env';
import { harness } from './helpers/harness';
import { freePort, ServiceProcess, tempDir, type LogLine } from './helpers/process';

interface Answer {
  requestId?: string;
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
      BCRYPT_COST: '8',
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
      const pids = new Set(service?.lines.filter((l) => l.msg === 'request' && l.path === '/ping').map((l) => l.pid));
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
        const a = await call(agent, port, 'POST', '/v1/auth/register', { user_name: requestId, password: 'pw' }, requestId);
        answers.push({ ...a, requestId });
        // Stop at the first refusal: the server is closed to new work.
        if (a.status === undefined) return;
      }
    };
    const clients = Array.from({ length: 16 }, client);
    while (answers.length < 60) await new Promise((r) => setTimeout(r, 10));
    service.child.kill('SIGTERM');
    await Promise.all(clients);
    const exit = await service.exited;
    agent.destroy();

    assert.deepEqual(exit, { code: 0, signal: null }, `unclean exit; stderr: ${service.stderr.join('')}`);
    assert.deepEqual(answers.filter((a) => a.hung), [], 'a request hung');
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
