import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryKv, RedisKv, type Kv } from '../messenger/infra/kv';
import { createLogger } from '../messenger/infra/logger';
import { MODE, RUN_ID } from './helpers/env';
import { harness, startApp, type Running } from './helpers/harness';
import { buildChat, buildUser, joinChat, postMessage } from './helpers/factories';

// Fixed seed: the same thousands of requests on every run (override with FUZZ_SEED / FUZZ_RUNS).
const SEED = Number(process.env.FUZZ_SEED ?? 20261123);
const RUNS = Number(process.env.FUZZ_RUNS ?? 3000);

interface Fixture {
  session: string;
  userName: string;
  password: string;
  chatId: string;
  userId: string;
  messageId: string;
}

/** Row counts of every table a request could write, in one query. */
async function counts(): Promise<string> {
  const r = (await harness().infra.db.raw(
    `SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM sessions) AS sessions,
            (SELECT count(*) FROM chats) AS chats, (SELECT count(*) FROM chat_members) AS members,
            (SELECT count(*) FROM messages) AS messages`,
  )) as { rows: Record<string, unknown>[] };
  return JSON.stringify(r.rows[0]);
}

/** Percent-encodes; a lone surrogate becomes the bytes of an encoded surrogate, which are not valid UTF-8. */
function enc(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    return '%ED%A0%80';
  }
}

const hex32 = fc.stringMatching(/^[0-9a-f]{32}$/);
const nasty = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.constantFrom('', ' ', '\u0000', 'a\u0000b', '\ud800', '😀'.repeat(20), '../../etc/passwd', "' OR 1=1 --", '<script>x</script>', '%00', '%ZZ', 'null', '1e309', '-1', '0'),
  fc.integer().map(String),
  fc.constant('x'.repeat(5000)),
);

/** Mostly the right fixture id for the place (so most requests reach a handler), sometimes another id or junk. */
function idArb(f: Fixture, right: string = f.chatId) {
  return fc.oneof(
    { weight: 12, arbitrary: fc.constant(right) },
    { weight: 1, arbitrary: fc.constantFrom(f.chatId, f.userId, f.messageId, '0'.repeat(32)) },
    { weight: 1, arbitrary: hex32 },
    { weight: 1, arbitrary: nasty },
  );
}

/** Text a validator may accept: short, printable. */
const plain = fc.string({ minLength: 1, maxLength: 30 }).filter((s) => /^\S(.*\S)?$/.test(s));

const jsonValue = fc.jsonValue({ maxDepth: 4 });
function bodyArb(f: Fixture) {
  const field = fc.oneof(nasty, jsonValue, fc.constantFrom(f.userId, 'alice', 123, 1.5, true, null));
  return fc.oneof(
    fc.record({ user_name: field, password: field }, { requiredKeys: [] }),
    fc.record({ chat_name: field }, { requiredKeys: [] }),
    fc.record({ message: field, extra: jsonValue }, { requiredKeys: [] }),
    jsonValue,
    fc.nat({ max: 3000 }).map((depth) => '['.repeat(depth) + ']'.repeat(depth)),
    fc.constant('{"message": "unterminated'),
    fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
    // Invalid UTF-8 inside an otherwise valid JSON document.
    fc.constant(Buffer.concat([Buffer.from('{"message":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')])),
  );
}

async function login(app: Running, userName: string, password: string): Promise<string> {
  const res = await app.client.post('/v1/auth/login', { user_name: userName, password }).expect(201);
  return (res.body as { session_id: string }).session_id;
}

describe('fuzzing requests generated from swagger.yml', function () {
  this.timeout(180_000);
  let app: Running;
  let f: Fixture;
  let kv: Kv;
  const kvPrefix = `test:${RUN_ID}:fuzz:`;

  /**
   * Everything in the fuzzed app's store, but the failed-login counters
   * (a refused login is counted on purpose) and the throttling state (off
   * here). Search tasks count by id only: the search worker moves accepted
   * tasks on in the background, whatever request is being answered; for the
   * same reason the per-account counts of unfinished searches are left out
   * (each finished task lowers its account's; tests/search.test.ts checks
   * that a refused search changes nothing).
   */
  async function kvState(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    const keep = (k: string) => !k.startsWith('login:') && !k.startsWith('rw:') && !k.startsWith('search-unfinished:') && !/^task:.*:results$/.test(k);
    const shown = (k: string, v: string) => (k.startsWith('task:') ? 'a task' : v);
    if (kv instanceof RedisKv) {
      let cursor = '0';
      do {
        const [next, keys] = await kv.redis.scan(cursor, 'MATCH', `${kvPrefix}*`, 'COUNT', 1000);
        cursor = next;
        const names = keys.map((full) => full.slice(kvPrefix.length)).filter(keep);
        // One round trip; a key that is not a string (a presence set) reads as null.
        const values = await kv.mget(names);
        names.forEach((k, i) => (out[k] = shown(k, values[i] ?? '(not a string)')));
      } while (cursor !== '0');
    } else {
      // The memory store keeps its entries private; the test reads them to compare.
      const map = (kv as unknown as { map: Map<string, { value: string }> }).map;
      for (const [k, e] of map) if (keep(k)) out[k] = shown(k, e.value);
    }
    return out;
  }

  before(async () => {
    // A store of its own, so that its whole state can be compared around each request.
    kv = MODE === 'services' ? new RedisKv(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379', kvPrefix, createLogger('silent')) : new MemoryKv();
    app = await startApp({ ...harness().infra, kv }, { NGINX_THROTTLING: '1', BODY_LIMIT: '64kb', LOGIN_MAX_FAILURES: '10000' });
    const u = await buildUser(app.client);
    const chatId = await buildChat(app.client, u.session);
    const userId = await joinChat(app.client, chatId, u.session);
    const messageId = await postMessage(app.client, chatId, userId, 'fixture', u.session);
    f = { session: u.session, userName: u.userName, password: u.password, chatId, userId, messageId };
  });
  after(async () => {
    await app?.close();
    await kv?.close();
  });

  it(`answers ${RUNS} generated requests with no 5xx, only documented errors, and no change from rejected ones`, async () => {
    const paths = (fx: Fixture) =>
      fc.oneof(
        // [method the operation takes, path, a well-formed body for it]; the method and the body are sometimes replaced below.
        fc.tuple(fc.constant(['POST', '/v1/auth/register'] as const), fc.record({ user_name: plain, password: plain })).map(([t, b]) => [...t, b] as const),
        fc.tuple(fc.constant(['POST', '/v1/auth/login'] as const), fc.record({ user_name: fc.oneof(plain, fc.constant(fx.userName)), password: fc.oneof(plain, fc.constant(fx.password)) })).map(([t, b]) => [...t, b] as const),
        fc.constant(['POST', '/v1/auth/logout'] as const),
        fc.tuple(fc.constant(['POST', '/v1/chats'] as const), fc.record({ chat_name: plain })).map(([t, b]) => [...t, b] as const),
        fc.tuple(idArb(fx), fc.record({ user_name: plain })).map(([id, b]) => ['POST', `/v1/chats/${enc(id)}/users`, b] as const),
        fc.tuple(idArb(fx), idArb(fx, fx.userId), fc.record({ message: plain })).map(([c, u, b]) => ['POST', `/v1/chats/${enc(c)}/messages?user_id=${enc(u)}`, b] as const),
        fc.tuple(idArb(fx), fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 1, max: 1000 }).map(String) }, nasty), idArb(fx, fx.messageId)).map(
          ([c, l, from]) => ['GET', `/v1/chats/${enc(c)}/messages?limit=${enc(l)}&from=${enc(from)}`] as const,
        ),
        fc.tuple(idArb(fx), fc.integer({ min: -5, max: 1005 })).map(([c, l]) => ['GET', `/v1/chats/${enc(c)}/messages?limit=${l}`] as const),
        fc.tuple(fc.constant(['POST', '/v1/chats/search'] as const), fc.record({ message: plain })).map(([t, b]) => [...t, b] as const),
        idArb(fx, '0'.repeat(32)).map((id) => ['GET', `/v1/chats/search/status/${enc(id)}`] as const),
        fc.tuple(idArb(fx, '0'.repeat(32)), nasty).map(([id, l]) => ['GET', `/v1/chats/search/${enc(id)}/messages?limit=${enc(l)}`] as const),
        nasty.map((s) => ['GET', `/${enc(s)}`] as const),
      );
    const request = fc.record({
      target: paths(f),
      // Mostly the operation's own method; sometimes another, for the 405 path.
      otherMethod: fc.oneof({ weight: 9, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE') }),
      // Mostly the operation's well-formed body; else anything, or none.
      body: fc.oneof({ weight: 3, arbitrary: fc.constant('WELL-FORMED' as const) }, { weight: 2, arbitrary: fc.option(bodyArb(f), { nil: undefined }) }),
      contentType: fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', undefined),
      // Mostly the fixture's valid session, so that most requests get past auth to validation.
      auth: fc.oneof(
        { weight: 8, arbitrary: fc.constant('VALID') },
        { weight: 1, arbitrary: fc.constantFrom('session_id 123', `Bearer ${f.session}`, undefined, `session_id ${'0'.repeat(32)}`, `session_id ${f.session.toUpperCase()}`) },
      ),
      duplicateHeader: fc.oneof({ weight: 30, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    });
    let sent = 0;
    let reached = 0;
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(request, async (req) => {
        const r = { ...req, method: req.otherMethod ?? req.target[0], path: req.target[1], body: req.body === 'WELL-FORMED' ? req.target[2] : req.body };
        const before = await counts();
        const kvBefore = await kvState();
        let t = app.client.request(r.method, r.path);
        const auth = r.auth === 'VALID' ? `session_id ${f.session}` : r.auth;
        if (auth !== undefined) t = t.set('Authorization', r.duplicateHeader ? `${auth}, ${auth}` : auth);
        if (r.contentType !== undefined) t = t.set('Content-Type', r.contentType);
        if (r.body !== undefined) t = t.send(Buffer.isBuffer(r.body) ? r.body : typeof r.body === 'string' ? r.body : JSON.stringify(r.body));
        const res = await t;
        sent++;
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        assert.ok(res.status < 500, `${r.method} ${r.path} answered ${res.status} ${res.text}`);
        if (res.status >= 400) {
          assert.equal(await counts(), before, `rejected ${r.method} ${r.path} (${res.status}) changed the database`);
          assert.deepEqual(await kvState(), kvBefore, `rejected ${r.method} ${r.path} (${res.status}) changed the key-value store`);
        }
        // Past routing and authentication: an operation's validation or handler answered.
        const code = (res.body as { message?: unknown }).message;
        if (res.status !== 401 && res.status !== 405 && !(res.status === 404 && code === 'not-found')) reached++;
        // A generated logout ended the fixture's session: log in again for the next requests.
        if (r.path === '/v1/auth/logout' && res.status === 200) f.session = await login(app, f.userName, f.password);
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
    console.log(`      fuzzed ${sent} requests (seed ${SEED}); statuses: ${[...statuses].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}×${n}`).join(' ')}; past routing and auth ${reached}`);
    assert.equal(sent, RUNS);
    assert.ok(reached >= 0.6 * sent, `only ${reached} of ${sent} requests got past routing and authentication`);
    const handled = [...statuses].filter(([s]) => s < 300).reduce((n, [, c]) => n + c, 0);
    assert.ok(handled >= 0.25 * sent, `only ${handled} of ${sent} requests were served by a handler (2xx)`);
  });
});
