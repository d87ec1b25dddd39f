import assert from 'node:assert/strict';
import fc from 'fast-check';
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

function idArb(f: Fixture) {
  return fc.oneof(fc.constantFrom(f.chatId, f.userId, f.messageId, '0'.repeat(32)), hex32, nasty);
}

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

  before(async () => {
    app = await startApp(harness().infra, { NGINX_THROTTLING: '1', BODY_LIMIT: '64kb', LOGIN_MAX_FAILURES: '10000' });
    const u = await buildUser(app.client);
    const chatId = await buildChat(app.client, u.session);
    const userId = await joinChat(app.client, chatId, u.session);
    const messageId = await postMessage(app.client, chatId, userId, 'fixture', u.session);
    f = { session: u.session, userName: u.userName, password: u.password, chatId, userId, messageId };
  });
  after(async () => app?.close());

  it(`answers ${RUNS} generated requests with no 5xx, only documented errors, and no change from rejected ones`, async () => {
    const paths = (fx: Fixture) =>
      fc.oneof(
        fc.constant('/v1/auth/register'),
        fc.constant('/v1/auth/login'),
        fc.constant('/v1/auth/logout'),
        fc.constant('/v1/chats'),
        idArb(fx).map((id) => `/v1/chats/${enc(id)}/users`),
        fc.tuple(idArb(fx), idArb(fx)).map(([c, u]) => `/v1/chats/${enc(c)}/messages?user_id=${enc(u)}`),
        fc.tuple(idArb(fx), nasty, idArb(fx)).map(([c, l, from]) => `/v1/chats/${enc(c)}/messages?limit=${enc(l)}&from=${enc(from)}`),
        fc.tuple(idArb(fx), fc.integer({ min: -5, max: 1005 })).map(([c, l]) => `/v1/chats/${enc(c)}/messages?limit=${l}`),
        fc.constant('/v1/chats/search'),
        idArb(fx).map((id) => `/v1/chats/search/status/${enc(id)}`),
        fc.tuple(idArb(fx), nasty).map(([id, l]) => `/v1/chats/search/${enc(id)}/messages?limit=${enc(l)}`),
        nasty.map((s) => `/${enc(s)}`),
      );
    const request = fc.record({
      method: fc.constantFrom('GET', 'POST', 'POST', 'POST', 'PUT', 'DELETE'),
      path: paths(f),
      body: fc.option(bodyArb(f), { nil: undefined }),
      contentType: fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', undefined),
      // Mostly the fixture's valid session, so that most requests get past auth to validation.
      auth: fc.oneof(
        { weight: 8, arbitrary: fc.constant('VALID') },
        { weight: 1, arbitrary: fc.constantFrom('session_id 123', `Bearer ${f.session}`, undefined, `session_id ${'0'.repeat(32)}`, `session_id ${f.session.toUpperCase()}`) },
      ),
      duplicateHeader: fc.constantFrom(false, false, false, false, false, true),
    });
    let sent = 0;
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const before = await counts();
        let t = app.client.request(r.method, r.path);
        const auth = r.auth === 'VALID' ? `session_id ${f.session}` : r.auth;
        if (auth !== undefined) t = t.set('Authorization', r.duplicateHeader ? `${auth}, ${auth}` : auth);
        if (r.contentType !== undefined) t = t.set('Content-Type', r.contentType);
        if (r.body !== undefined) t = t.send(Buffer.isBuffer(r.body) ? r.body : typeof r.body === 'string' ? r.body : JSON.stringify(r.body));
        const res = await t;
        sent++;
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        assert.ok(res.status < 500, `${r.method} ${r.path} answered ${res.status} ${res.text}`);
        if (res.status >= 400) assert.equal(await counts(), before, `rejected ${r.method} ${r.path} (${res.status}) changed the database`);
        // A generated logout ended the fixture's session: log in again for the next requests.
        if (r.path === '/v1/auth/logout' && res.status === 200) f.session = await login(app, f.userName, f.password);
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
    console.log(`      fuzzed ${sent} requests (seed ${SEED}); statuses: ${[...statuses].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}×${n}`).join(' ')}`);
    assert.equal(sent, RUNS);
  });
});
