import assert from 'node:assert/strict';
import type http from 'node:http';
import { randomBytes } from 'node:crypto';
import supertest from 'supertest';
import { WebSocket } from 'ws';
import { MODE, testEnv } from './helpers/env';
import { freePort, ServiceProcess } from './helpers/process';
import { harness, startApp, type Running } from './helpers/harness';
import { buildChat, buildUser, uniq } from './helpers/factories';
import { MemoryKv } from '../messenger/infra/kv';
import { ConfigError, loadConfig } from '../messenger/config';
import { waitUntil } from './helpers/wait';
import { refused, type OpenOptions } from './helpers/ws';

async function burst(n: number, send: () => Promise<{ status: number }>): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) statuses.push((await send()).status);
  return statuses;
}

describe('throttling', () => {
  let app: Running;
  before(async () => {
    app = await startApp(harness().infra, { RPS_LIMIT: '5' });
  });
  after(async () => app.close());

  it('lets RPS_LIMIT requests per second through per session, then answers 429 request-limit-exceeded with Retry-After', async () => {
    const { client } = app;
    const u = await buildUser(harness().app.client);
    const started = Date.now();
    const statuses = await burst(7, () => client.post('/v1/chats', { chat_name: 'x' }, u.session));
    // On the real clock one more slot frees every 200 ms the burst takes (a
    // loaded machine is slow); the exact boundary is tested on a hand-moved
    // clock below ('throttling at exact boundaries').
    const extra = Math.floor((Date.now() - started) / 200);
    assert.deepEqual(statuses.slice(0, 5), [201, 201, 201, 201, 201]);
    assert.ok(statuses.filter((s) => s === 201).length <= 5 + extra, statuses.join(','));
    if (extra === 0) assert.deepEqual(statuses.slice(5), [429, 429]);
    await burst(5, () => client.post('/v1/chats', { chat_name: 'x' }, u.session));
    const res = await client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(429, { message: 'request-limit-exceeded' });
    assert.ok(Number(res.headers['retry-after']) >= 1);
    assert.equal(res.headers['x-ratelimit-remaining'], '0');
  });

  it('sends X-RateLimit-Limit, -Remaining and -Reset on every response, errors included', async () => {
    const { client } = app;
    const u = await buildUser(harness().app.client);
    const ok = await client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(201);
    assert.equal(ok.headers['x-ratelimit-limit'], '5');
    assert.equal(ok.headers['x-ratelimit-remaining'], '4');
    assert.ok(Number(ok.headers['x-ratelimit-reset']) >= 1);
    const bad = await client.post('/v1/chats', { chat_name: '' }, u.session).expect(400);
    assert.equal(bad.headers['x-ratelimit-remaining'], '3');
    const unauth = await client.get('/nowhere', 'f'.repeat(32)).expect(401);
    assert.equal(unauth.headers['x-ratelimit-limit'], '5');
  });

  it('lets requests through again once the window has passed', async function () {
    this.timeout(10_000);
    const { client } = app;
    const u = await buildUser(harness().app.client);
    await burst(6, () => client.post('/v1/chats', { chat_name: 'x' }, u.session));
    await client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(429);
    // Refused requests do not use up the allowance, so polling does not push the window back.
    await waitUntil('a request to pass again', async () => (await client.post('/v1/chats', { chat_name: 'x' }, u.session)).status === 201, 3000);
  });

  it('counts each session separately, and requests without a session by client address', async () => {
    const { client } = app;
    const a = await buildUser(harness().app.client);
    const b = await buildUser(harness().app.client);
    await burst(6, () => client.post('/v1/chats', { chat_name: 'x' }, a.session));
    await client.post('/v1/chats', { chat_name: 'x' }, a.session).expect(429);
    await client.post('/v1/chats', { chat_name: 'x' }, b.session).expect(201);
    // No session: the address is the key (shared by every anonymous request from here).
    const anon = await burst(7, () => client.get('/ping_db'));
    assert.ok(anon.includes(429), `no 429 among ${anon.join(',')}`);
  });

  it('does not believe X-Forwarded-For from a client that is not a trusted proxy', async () => {
    const { client } = app;
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) {
      statuses.push((await client.get('/ping_db').set('X-Forwarded-For', `10.0.0.${i}`)).status);
    }
    assert.ok(statuses.includes(429), 'a forged X-Forwarded-For dodged the limit');
  });

  it('uses the right-most untrusted X-Forwarded-For hop behind a trusted proxy', async () => {
    const behind = await startApp(harness().infra, { RPS_LIMIT: '3', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      const { client } = behind;
      const from = (ip: string) => client.get('/ping_db').set('X-Forwarded-For', `1.2.3.4, ${ip}`);
      const one = await burst(4, () => from('198.51.100.7'));
      assert.deepEqual(one, [200, 200, 200, 429]);
      await from('198.51.100.8').expect(200);
    } finally {
      await behind.close();
    }
  });

  it('refuses TRUSTED_PROXIES entries that are not IP addresses at start-up, naming each (a hostname, a range or a port never matched a peer)', () => {
    assert.throws(
      () => loadConfig(testEnv({ TRUSTED_PROXIES: '172.28.0.10, nginx,10.0.0.0/8,127.0.0.1:8080' })),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /TRUSTED_PROXIES must list IP addresses .*got "nginx", "10\.0\.0\.0\/8", "127\.0\.0\.1:8080"/);
        assert.doesNotMatch(err.message, /"172\.28\.0\.10"/);
        return true;
      },
    );
    // Written the way the peer shows up or not, an address is the same proxy.
    assert.deepEqual(loadConfig(testEnv({ TRUSTED_PROXIES: '172.28.0.10, ::ffff:10.0.0.1,0:0:0:0:0:0:0:1' })).throttling.trustedProxies, ['172.28.0.10', '10.0.0.1', '::1']);
  });

  it('never throttles GET /ping', async () => {
    const statuses = await burst(10, () => app.client.get('/ping'));
    assert.deepEqual(new Set(statuses), new Set([200]));
  });

  it('is off with NGINX_THROTTLING=1 or without throttling in APPS: no limit, no headers', async () => {
    const envs: Record<string, string>[] = [{ NGINX_THROTTLING: '1', RPS_LIMIT: '2' }, { APPS: 'auth,chats,messages', RPS_LIMIT: '2' }];
    for (const env of envs) {
      const off = await startApp(harness().infra, env);
      try {
        const u = await buildUser(harness().app.client);
        const statuses = await burst(5, () => off.client.post('/v1/chats', { chat_name: 'x' }, u.session));
        assert.deepEqual(statuses, [201, 201, 201, 201, 201]);
        const res = await off.client.post('/v1/chats', { chat_name: 'x' }, u.session);
        assert.equal(res.headers['x-ratelimit-limit'], undefined);
      } finally {
        await off.close();
      }
    }
  });

  it('two app instances sharing the store let through no more than the limit for one session', async () => {
    const other = await startApp(harness().infra, { RPS_LIMIT: '5' });
    try {
      const u = await buildUser(harness().app.client);
      const statuses: number[] = [];
      const started = Date.now();
      for (let i = 0; i < 5; i++) {
        statuses.push((await app.client.post('/v1/chats', { chat_name: 'x' }, u.session)).status);
        statuses.push((await other.client.post('/v1/chats', { chat_name: 'x' }, u.session)).status);
      }
      // One more slot per 200 ms the loop took on the real clock (none on a fast machine).
      const extra = Math.floor((Date.now() - started) / 200);
      const passed = statuses.filter((s) => s === 201).length;
      assert.ok(passed >= 5 && passed <= 5 + extra, `${passed} passed in ${Date.now() - started} ms: ${statuses.join(',')}`);
    } finally {
      await other.close();
    }
  });
});

describe('throttling made-up session ids', () => {
  it('charges tokens that auth refuses to the client address: past RPS_LIMIT of them, every token from it gets 429 without a lookup', async function () {
    this.timeout(10_000);
    const app = await startApp(harness().infra, { RPS_LIMIT: '5', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      const { client } = app;
      const attacker = `198.51.100.${Math.floor(Math.random() * 200) + 1}`;
      // Built first: a login takes time, during which the allowance would refill.
      const u = await buildUser(harness().app.client);
      const statuses = await burst(8, () => client.post('/v1/chats', { chat_name: 'x' }, randomBytes(16).toString('hex')).set('X-Forwarded-For', attacker));
      assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
      // A real session from that address is refused too while the allowance is used up...
      await client.post('/v1/chats', { chat_name: 'x' }, u.session).set('X-Forwarded-For', attacker).expect(429, { message: 'request-limit-exceeded' });
      // ...but not from another address, and not from that one once the window has passed.
      await client.post('/v1/chats', { chat_name: 'x' }, u.session).set('X-Forwarded-For', '198.51.100.250').expect(201);
      await waitUntil('the address to be let through again', async () => (await client.post('/v1/chats', { chat_name: 'x' }, u.session).set('X-Forwarded-For', attacker)).status === 201, 3000);
    } finally {
      await app.close();
    }
  });
});

/** An app over the shared database with a store of its own whose clock the test moves by hand. */
async function clockedApp(env: Record<string, string>): Promise<{ app: Running; advance: (ms: number) => void; close: () => Promise<void> }> {
  let now = Date.now();
  const kv = new MemoryKv(() => now);
  const app = await startApp({ ...harness().infra, kv }, env);
  return {
    app,
    advance: (ms) => {
      now += ms;
    },
    async close() {
      await app.close();
      await kv.close();
    },
  };
}

describe('throttling at exact boundaries (controlled clock)', () => {
  it('RPS_LIMIT=5: exactly 5 requests at one instant pass with X-RateLimit-Remaining 4..0, the 6th gets 429 with Retry-After 1', async () => {
    const c = await clockedApp({ RPS_LIMIT: '5' });
    try {
      const u = await buildUser(harness().app.client);
      const seen: [number, string, string, string][] = [];
      for (let i = 0; i < 7; i++) {
        const res = await c.app.client.post('/v1/chats', { chat_name: `c${i}` }, u.session);
        seen.push([res.status, res.headers['x-ratelimit-limit'], res.headers['x-ratelimit-remaining'], res.headers['x-ratelimit-reset']]);
        if (res.status === 429) {
          assert.deepEqual(res.body, { message: 'request-limit-exceeded' });
          assert.equal(res.headers['retry-after'], '1');
        } else {
          assert.deepEqual(Object.keys(res.body as object), ['chat_id']);
        }
      }
      assert.deepEqual(seen, [
        [201, '5', '4', '1'],
        [201, '5', '3', '1'],
        [201, '5', '2', '1'],
        [201, '5', '1', '1'],
        [201, '5', '0', '1'],
        [429, '5', '0', '1'],
        [429, '5', '0', '1'],
      ]);
      // No window of a second holds more than 5: a millisecond before the five leave it, nothing passes;
      // when they have left, the whole allowance is back (a token bucket let one more in every 200 ms).
      c.advance(999);
      await c.app.client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(429);
      c.advance(1);
      const fresh = await c.app.client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(201);
      assert.equal(fresh.headers['x-ratelimit-remaining'], '4');
    } finally {
      await c.close();
    }
  });

  it('RPS_LIMIT=1 lets one request through and refuses the second', async () => {
    const c = await clockedApp({ RPS_LIMIT: '1' });
    try {
      const u = await buildUser(harness().app.client);
      const statuses = await burst(3, () => c.app.client.post('/v1/chats', { chat_name: 'x' }, u.session));
      assert.deepEqual(statuses, [201, 429, 429]);
    } finally {
      await c.close();
    }
  });

  it('without a session the client address is the key: exactly RPS_LIMIT, whatever X-Forwarded-For an untrusted client sends', async () => {
    const c = await clockedApp({ RPS_LIMIT: '3' });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await c.app.client.get('/ping_db').set('X-Forwarded-For', `10.0.0.${i}`)).status);
      assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    } finally {
      await c.close();
    }
  });

  it('a 401 for a made-up token charges the address: exactly RPS_LIMIT of them, then 429 for any token from there', async () => {
    const c = await clockedApp({ RPS_LIMIT: '3', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      const u = await buildUser(harness().app.client);
      const statuses = await burst(5, () => c.app.client.post('/v1/chats', { chat_name: 'x' }, randomBytes(16).toString('hex')).set('X-Forwarded-For', '198.51.100.9'));
      assert.deepEqual(statuses, [401, 401, 401, 429, 429]);
      await c.app.client.post('/v1/chats', { chat_name: 'x' }, u.session).set('X-Forwarded-For', '198.51.100.9').expect(429);
      // Once the three refused tokens have left the window (a second later), the real session passes again.
      c.advance(999);
      await c.app.client.post('/v1/chats', { chat_name: 'x' }, u.session).set('X-Forwarded-For', '198.51.100.9').expect(429);
      c.advance(1);
      await c.app.client.post('/v1/chats', { chat_name: 'x' }, u.session).set('X-Forwarded-For', '198.51.100.9').expect(201);
    } finally {
      await c.close();
    }
  });
});

describe('throttling keys (controlled clock)', () => {
  it('one session is one allowance whatever the case or dashes of its id', async () => {
    const c = await clockedApp({ RPS_LIMIT: '3' });
    try {
      const u = await buildUser(harness().app.client);
      const s = u.session;
      const dashed = `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`.toUpperCase();
      const forms = [s, s.toUpperCase(), dashed, s];
      const statuses: number[] = [];
      for (const form of forms) statuses.push((await c.app.client.post('/v1/chats', { chat_name: 'x' }, form)).status);
      assert.deepEqual(statuses, [201, 201, 201, 429]);
    } finally {
      await c.close();
    }
  });

  it('refusals other than 401 for a real session do not use up the address\'s bad-token allowance', async () => {
    const c = await clockedApp({ RPS_LIMIT: '3', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      const u = await buildUser(harness().app.client);
      const v = await buildUser(harness().app.client);
      const from = '198.51.100.77';
      // Three refusals (400, 404) with a real session use up that session's allowance only.
      await c.app.client.post('/v1/chats', { chat_name: '' }, u.session).set('X-Forwarded-For', from).expect(400);
      await c.app.client.get(`/v1/chats/${'0'.repeat(32)}/messages?limit=1`, u.session).set('X-Forwarded-For', from).expect(404);
      await c.app.client.post('/v1/chats', {}, u.session).set('X-Forwarded-For', from).expect(400);
      await c.app.client.post('/v1/chats', { chat_name: 'x' }, u.session).set('X-Forwarded-For', from).expect(429);
      // Another session from the same address, at the same instant, is not held back.
      await c.app.client.post('/v1/chats', { chat_name: 'x' }, v.session).set('X-Forwarded-For', from).expect(201);
      // Nor by 401s for requests that sent no token at all (they use the address's own allowance).
      const w = await buildUser(harness().app.client);
      const other = '198.51.100.78';
      for (let i = 0; i < 3; i++) await c.app.client.post('/v1/chats', { chat_name: 'x' }).set('X-Forwarded-For', other).expect(401);
      await c.app.client.post('/v1/chats', { chat_name: 'x' }, w.session).set('X-Forwarded-For', other).expect(201);
    } finally {
      await c.close();
    }
  });
});

describe('throttling: what is counted, and against which key (controlled clock)', () => {
  it('probes and scrapes (/ping, /health, /metrics) are never limited, carry no rate-limit headers and use none of the address\'s allowance', async () => {
    const c = await clockedApp({ RPS_LIMIT: '1', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      const from = '198.51.100.41';
      for (const path of ['/ping', '/health', '/metrics']) {
        for (let i = 0; i < 3; i++) {
          const res = await c.app.client.get(path).set('X-Forwarded-For', from);
          assert.notEqual(res.status, 429, `${path} was limited`);
          assert.equal(res.headers['x-ratelimit-limit'], undefined, `${path} carried X-RateLimit-Limit`);
        }
      }
      // The address's one request this second is still there.
      const counted = await c.app.client.get('/ping_db').set('X-Forwarded-For', from).expect(200);
      assert.equal(counted.headers['x-ratelimit-remaining'], '0');
      await c.app.client.get('/ping_db').set('X-Forwarded-For', from).expect(429);
    } finally {
      await c.close();
    }
  });

  it('an Authorization header that is not exactly `session_id <id>` is counted against the client address, not a session or its bad-token allowance', async () => {
    const c = await clockedApp({ RPS_LIMIT: '3', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      const u = await buildUser(harness().app.client);
      for (const [from, header] of [
        ['198.51.100.42', `xsession_id ${u.session}`],
        ['198.51.100.43', `session_id ${u.session} x`],
      ]) {
        const statuses: number[] = [];
        for (let i = 0; i < 3; i++) {
          statuses.push((await c.app.client.request('POST', '/v1/chats').set('Authorization', header).set('X-Forwarded-For', from).send({ chat_name: 'x' })).status);
        }
        assert.deepEqual(statuses, [401, 401, 401], header);
        // The address's own allowance is used up...
        await c.app.client.get('/ping_db').set('X-Forwarded-For', from).expect(429);
        // ...but neither the session's nor the address's bad-token allowance was touched.
        await c.app.client.post('/v1/chats', { chat_name: 'x' }, u.session).set('X-Forwarded-For', from).expect(201);
        c.advance(1000);
      }
    } finally {
      await c.close();
    }
  });

  it('on the public operations (register, login, refresh) a session header, made up or real, counts against the client address', async () => {
    const c = await clockedApp({ RPS_LIMIT: '3', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      const u = await buildUser(harness().app.client);
      const sends: [string, object][] = [
        ['/v1/auth/register', { user_name: '', password: 'x' }],
        ['/v1/auth/login', { user_name: uniq('nobody'), password: '' }],
        ['/v1/auth/refresh', {}],
      ];
      for (const [i, [path, body]] of sends.entries()) {
        const from = `198.51.100.5${i}`;
        // A fresh made-up id each time used to be a fresh allowance that no 401 ever charged (no session is checked there).
        const statuses = await burst(5, () => c.app.client.post(path, body, randomBytes(16).toString('hex')).set('X-Forwarded-For', from));
        assert.deepEqual(statuses, [400, 400, 400, 429, 429], path);
        await c.app.client.post(path, body, u.session).set('X-Forwarded-For', from).expect(429, { message: 'request-limit-exceeded' });
        await c.app.client.get('/ping_db').set('X-Forwarded-For', from).expect(429);
        // The real session's own allowance was not touched.
        await c.app.client.post('/v1/chats', { chat_name: 'x' }, u.session).set('X-Forwarded-For', from).expect(201);
      }
    } finally {
      await c.close();
    }
  });
});

describe('per-address limits and IPv6 (controlled clock)', () => {
  it('an IPv6 client is one address per /64: the request limit and the failed-login limit do not restart with each address it picks', async () => {
    const c = await clockedApp({ RPS_LIMIT: '3', LOGIN_MAX_FAILURES: '2', LOGIN_MAX_FAILURES_PER_ADDRESS: '3', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      // Before, each address of the /64 was a fresh allowance: five 200s.
      const statuses: number[] = [];
      for (let i = 1; i <= 5; i++) statuses.push((await c.app.client.get('/ping_db').set('X-Forwarded-For', `2001:db8:5:6::${i}`)).status);
      assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
      // Written another way, the same /64 is the same client; another /64 is another.
      await c.app.client.get('/ping_db').set('X-Forwarded-For', '2001:0DB8:0005:0006:aaaa:bbbb:cccc:dddd').expect(429);
      await c.app.client.get('/ping_db').set('X-Forwarded-For', '2001:db8:5:7::1').expect(200);
      c.advance(1000);
      // Password spraying: one wrong password for each of three names, each from a new address of one /64.
      const names = [uniq('spray'), uniq('spray'), uniq('spray'), uniq('spray')];
      const tries: number[] = [];
      for (const [i, user_name] of names.entries()) {
        tries.push((await c.app.client.post('/v1/auth/login', { user_name, password: 'x' }).set('X-Forwarded-For', `2001:db8:9:9:${i}::1`)).status);
        c.advance(1000);
      }
      assert.deepEqual(tries, [400, 400, 400, 429]);
    } finally {
      await c.close();
    }
  });
});

describe('throttling with AUTH_DISABLED=1 (controlled clock)', () => {
  it('counts every request against the client address: a session header names no session there, made up or not', async () => {
    const c = await clockedApp({ RPS_LIMIT: '3', AUTH_DISABLED: '1', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      const from = '198.51.100.71';
      // Before, each made-up id was a fresh allowance that no 401 ever charged: five 201s.
      const statuses = await burst(5, () => c.app.client.post('/v1/chats', { chat_name: 'x' }, randomBytes(16).toString('hex')).set('X-Forwarded-For', from));
      assert.deepEqual(statuses, [201, 201, 201, 429, 429]);
      await c.app.client.post('/v1/chats', { chat_name: 'x' }).set('X-Forwarded-For', from).expect(429, { message: 'request-limit-exceeded' });
      // Another address has its own allowance.
      await c.app.client.post('/v1/chats', { chat_name: 'x' }, randomBytes(16).toString('hex')).set('X-Forwarded-For', '198.51.100.72').expect(201);
    } finally {
      await c.close();
    }
  });
});

describe('throttling WebSocket upgrades (controlled clock)', () => {
  it('GET /v1/events upgrades are counted like requests: made-up session ids or tickets get RPS_LIMIT 401s a second, then 429 without a lookup', async () => {
    const c = await clockedApp({ RPS_LIMIT: '3', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      const u = await buildUser(harness().app.client);
      const port = c.app.client.port;
      const statuses = async (o: () => OpenOptions) => {
        const seen: number[] = [];
        for (let i = 0; i < 5; i++) seen.push((await refused(port, o())).status);
        return seen;
      };
      // Upgrades never enter Koa: before, every one was looked up, none was ever limited (401 five times).
      const from = '198.51.100.61';
      assert.deepEqual(await statuses(() => ({ session: randomBytes(16).toString('hex'), headers: { 'X-Forwarded-For': from } })), [401, 401, 401, 429, 429]);
      const r = await refused(port, { session: u.session, headers: { 'X-Forwarded-For': from } });
      assert.deepEqual([r.status, r.body, r.headers['retry-after'], r.headers['x-ratelimit-limit']], [429, { message: 'request-limit-exceeded' }, '1', '3']);
      // A ticket upgrade carries no session id: the client address is the key.
      const other = '198.51.100.62';
      assert.deepEqual(await statuses(() => ({ ticket: randomBytes(16).toString('hex'), headers: { 'X-Forwarded-For': other } })), [401, 401, 401, 429, 429]);
      await c.app.client.get('/ping_db').set('X-Forwarded-For', other).expect(429);
      // A second later the real session opens its socket; the 101 carries the rate-limit headers.
      c.advance(1000);
      const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/events`, { headers: { Authorization: `session_id ${u.session}`, 'X-Forwarded-For': from } });
      const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
        ws.once('upgrade', resolve);
        ws.once('error', reject);
      });
      assert.deepEqual([res.statusCode, res.headers['x-ratelimit-limit'], res.headers['x-ratelimit-remaining']], [101, '3', '2']);
      const closed = new Promise((resolve) => ws.once('close', resolve));
      ws.close();
      await closed;
    } finally {
      await c.close();
    }
  });
  it('upgrades to a path no app serves are counted too: made-up session ids get RPS_LIMIT 401s a second, then 429', async () => {
    const c = await clockedApp({ RPS_LIMIT: '3', TRUSTED_PROXIES: '127.0.0.1,::1' });
    try {
      const status = (session: string) =>
        new Promise<number>((resolve, reject) => {
          const ws = new WebSocket(`ws://127.0.0.1:${c.app.client.port}/v1/nowhere`, { headers: { Authorization: `session_id ${session}`, 'X-Forwarded-For': '198.51.100.63' } });
          ws.once('unexpected-response', (_req, res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          ws.once('open', () => reject(new Error('opened')));
          ws.once('error', () => undefined);
        });
      const seen: number[] = [];
      for (let i = 0; i < 5; i++) seen.push(await status(randomBytes(16).toString('hex')));
      // Before, every one was answered 404 at once: no session was checked, nothing was counted.
      assert.deepEqual(seen, [401, 401, 401, 429, 429]);
    } finally {
      await c.close();
    }
  });
});

describe('login lockout at exact boundaries (controlled clock)', () => {
  const env = { LOGIN_MAX_FAILURES: '3', LOGIN_WINDOW_SECONDS: '60', NGINX_THROTTLING: '1', TRUSTED_PROXIES: '127.0.0.1,::1' };

  it('LOGIN_MAX_FAILURES=3: three wrong passwords are checked, the next login is refused with Retry-After = the window left, until it ends', async () => {
    const c = await clockedApp(env);
    try {
      const u = await buildUser(harness().app.client);
      const from = '203.0.113.200';
      const login = (password: string) => c.app.client.post('/v1/auth/login', { user_name: u.userName, password }).set('X-Forwarded-For', from);
      for (let i = 0; i < 3; i++) await login('wrong').expect(400, { message: 'bad-password' });
      const locked = await login(u.password).expect(429, { message: 'too-many-login-attempts' });
      assert.equal(locked.headers['retry-after'], '60');
      c.advance(45_000);
      assert.equal((await login(u.password).expect(429, { message: 'too-many-login-attempts' })).headers['retry-after'], '15');
      c.advance(14_500);
      assert.equal((await login(u.password).expect(429)).headers['retry-after'], '1');
      c.advance(500);
      const ok = await login(u.password).expect(201);
      assert.match((ok.body as { session_id: string }).session_id, /^[0-9a-f]{32}$/);
    } finally {
      await c.close();
    }
  });
});

describe('login lockout', () => {
  let app: Running;
  // Behind a "proxy" (the test itself), so each test's client has its own address.
  // The address limit is normally higher than the name limit; here both are 3 so one test can reach it quickly.
  const lockoutEnv = {
    LOGIN_MAX_FAILURES: '3', LOGIN_MAX_FAILURES_PER_ADDRESS: '3', LOGIN_WINDOW_SECONDS: '2', NGINX_THROTTLING: '1', TRUSTED_PROXIES: '127.0.0.1,::1',
  };
  let next = 0;
  const address = () => `203.0.113.${++next}`;
  before(async () => {
    app = await startApp(harness().infra, lockoutEnv);
  });
  after(async () => app.close());

  it('after LOGIN_MAX_FAILURES failures for a name answers 429 too-many-login-attempts, even with the right password, until the window passes', async function () {
    this.timeout(10_000);
    const { client } = app;
    const u = await buildUser(harness().app.client);
    for (let i = 0; i < 3; i++) {
      // From three different addresses: the name alone is what gets locked.
      await client.post('/v1/auth/login', { user_name: u.userName, password: 'wrong' }).set('X-Forwarded-For', address()).expect(400, { message: 'bad-password' });
    }
    const mine = address();
    const locked = await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('X-Forwarded-For', mine).expect(429, { message: 'too-many-login-attempts' });
    assert.ok(Number(locked.headers['retry-after']) >= 1);
    // A refused login counts as no failure, so polling does not extend the lockout.
    await waitUntil('the lockout to end', async () => (await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('X-Forwarded-For', mine)).status === 201, 5000, 200);
  });

  it('counts failures per client address too, across user names', async function () {
    this.timeout(10_000);
    const behind = await startApp(harness().infra, lockoutEnv);
    try {
      const { client } = behind;
      const addr = address();
      for (let i = 0; i < 3; i++) {
        await client.post('/v1/auth/login', { user_name: uniq(), password: 'x' }).set('X-Forwarded-For', addr).expect(400, { message: 'user-not-found' });
      }
      const u = await buildUser(harness().app.client);
      await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('X-Forwarded-For', addr).expect(429, { message: 'too-many-login-attempts' });
      await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('X-Forwarded-For', address()).expect(201);
    } finally {
      await behind.close();
    }
  });

  it('lets no more than LOGIN_MAX_FAILURES concurrent wrong passwords be checked', async () => {
    const { client } = app;
    const u = await buildUser(harness().app.client);
    const results = await Promise.all(
      Array.from({ length: 12 }, () => client.post('/v1/auth/login', { user_name: u.userName, password: 'wrong' }).set('X-Forwarded-For', address())),
    );
    const checked = results.filter((r) => r.status === 400).length;
    // At most the limit got a password comparison (in-progress attempts are counted
    // conservatively, so it may be fewer); every other one was refused.
    assert.ok(checked >= 1 && checked <= 3, `${checked} wrong passwords were checked`);
    assert.equal(results.filter((r) => r.status === 429).length, 12 - checked);
    // Sequential wrong passwords fill up the rest of the allowance, and not one more.
    for (let i = checked; i < 3; i++) {
      await client.post('/v1/auth/login', { user_name: u.userName, password: 'wrong' }).set('X-Forwarded-For', address()).expect(400, { message: 'bad-password' });
    }
    // Three failures lock the name: the right password is refused now too.
    await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('X-Forwarded-For', address()).expect(429, { message: 'too-many-login-attempts' });
  });

  it('lets up to LOGIN_MAX_FAILURES concurrent right passwords in; more at once are told to retry in a second, and count as no failure', async () => {
    const { client } = app;
    const u = await buildUser(harness().app.client);
    const three = await Promise.all(Array.from({ length: 3 }, () => client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('X-Forwarded-For', address())));
    assert.deepEqual(three.map((r) => r.status), [201, 201, 201]);
    const eight = await Promise.all(Array.from({ length: 8 }, () => client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('X-Forwarded-For', address())));
    const refused = eight.filter((r) => r.status === 429);
    assert.ok(eight.filter((r) => r.status === 201).length >= 1);
    assert.ok(refused.every((r) => r.headers['retry-after'] === '1'), 'a busy refusal asked to wait longer than a second');
    // Nothing was counted as a failure: a login right after works.
    await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('X-Forwarded-For', address()).expect(201);
  });

  it('a successful login does not count as a failure', async () => {
    const { client } = app;
    const u = await buildUser(harness().app.client);
    const mine = address();
    for (let i = 0; i < 5; i++) await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).set('X-Forwarded-For', mine).expect(201);
    await buildChat(client, u.session);
  });
});

if (MODE === 'services') {
  describe('two web processes sharing Redis (services mode)', function () {
    this.timeout(60_000);
    const procs: ServiceProcess[] = [];
    const ports: number[] = [];

    before(async () => {
      for (let i = 0; i < 2; i++) {
        const port = await freePort();
        const p = new ServiceProcess('messenger/main.ts', testEnv({ PORT: String(port), RPS_LIMIT: '5', LOG_LEVEL: 'info', SEARCH_IN_PROCESS_CONSUMER: '0' }));
        procs.push(p);
        ports.push(port);
      }
      for (const p of procs) await p.waitFor((l) => l.msg === 'messenger-api listening');
    });
    after(async () => {
      for (const p of procs) {
        p.kill();
        await p.exited;
      }
    });

    it('together let through no more than RPS_LIMIT per second for one session', async () => {
      const u = await buildUser(harness().app.client);
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) {
        for (const port of ports) {
          const res = await supertest(`http://127.0.0.1:${port}`).post('/v1/chats').set('Authorization', `session_id ${u.session}`).send({ chat_name: 'x' });
          statuses.push(res.status);
        }
      }
      assert.ok(statuses.filter((s) => s === 201).length <= 6, statuses.join(','));
      assert.ok(statuses.filter((s) => s === 429).length >= 6, statuses.join(','));
    });

    it('a page cached on one process is fresh on the other after a write there', async () => {
      const u = await buildUser(harness().app.client);
      // Paced under RPS_LIMIT=5: this test is about the cache, not the limit.
      const paced = (port: number) => {
        const agent = supertest(`http://127.0.0.1:${port}`);
        const wait = () => new Promise((r) => setTimeout(r, 250));
        return {
          get: (path: string) => wait().then(() => agent.get(path).set('Authorization', auth)),
          post: (path: string, body: object) => wait().then(() => agent.post(path).set('Authorization', auth).send(body)),
        };
      };
      const auth = `session_id ${u.session}`;
      const [a, b] = ports.map(paced);
      const chat = await a.post('/v1/chats', { chat_name: 'x' });
      assert.equal(chat.status, 201);
      const chatId = chat.body.chat_id as string;
      const userId = (await a.post(`/v1/chats/${chatId}/users`, { user_name: 'n' })).body.user_id as string;
      assert.equal((await a.get(`/v1/chats/${chatId}/messages?limit=10`)).headers['x-cache'], 'MISS');
      assert.equal((await a.get(`/v1/chats/${chatId}/messages?limit=10`)).headers['x-cache'], 'HIT');
      const posted = await b.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, { message: 'from b' });
      assert.equal(posted.status, 201);
      const page = await a.get(`/v1/chats/${chatId}/messages?limit=10`);
      assert.equal(page.status, 200);
      assert.deepEqual((page.body as { messages: { message_id: string }[] }).messages.map((m) => m.message_id), [posted.body.message_id]);
    });
  });
}
