import assert from 'node:assert/strict';
import { MODE, databaseUrl, testEnv } from './helpers/env';
import { startApp, startInfra, type Running } from './helpers/harness';
import type { BuiltInfra } from '../messenger/infra';
import { TcpProxy } from './helpers/tcp-proxy';
import { buildUser } from './helpers/factories';
import { refused } from './helpers/ws';

/** Retries `fn` until it stops throwing, for at most `ms`. */
async function eventually(ms: number, fn: () => Promise<void>): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      await fn();
      return;
    } catch (err) {
      if (Date.now() > until) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

interface Proxied {
  infra: BuiltInfra;
  app: Running;
  close(): Promise<void>;
}

/** An app whose connection to one service goes through `proxy`; `env` names the proxied URL. */
async function proxiedApp(proxy: TcpProxy, env: (port: number) => Record<string, string>): Promise<Proxied> {
  const overrides = env(await proxy.up());
  const infra = await startInfra(overrides);
  const app = await startApp(infra, overrides);
  return {
    infra,
    app,
    async close() {
      await app.close();
      await infra.shutdown.run();
      await proxy.down();
    },
  };
}

// Outages of the real services, simulated with a TCP proxy that is cut and
// restored, so the shared PostgreSQL and Redis keep running for everyone else.
if (MODE === 'services') {
  describe('PostgreSQL outage (services mode)', function () {
    this.timeout(30_000);
    const proxy = new TcpProxy('127.0.0.1', Number(new URL(databaseUrl()).port || 5432));
    let p: Proxied;

    before(async () => {
      p = await proxiedApp(proxy, (port) => {
        const url = new URL(databaseUrl());
        url.port = String(port);
        return { DATABASE_URL: url.toString(), DB_TIMEOUT_MS: '1000' };
      });
    });
    after(async () => p.close());

    it('answers /ping 200, /ping_db and database operations 503 service-unavailable, then recovers by itself', async () => {
      const { client } = p.app;
      const u = await buildUser(client);
      await client.post('/v1/chats', { chat_name: 'before' }, u.session).expect(201);

      await proxy.down();
      await client.get('/ping').timeout(5000).expect(200);
      await client.get('/ping_db').timeout(5000).expect(503, { message: 'service-unavailable' });
      await client.post('/v1/chats', { chat_name: 'during' }, u.session).timeout(5000).expect(503, { message: 'service-unavailable' });
      await client.post('/v1/auth/register', { user_name: `down_${Date.now()}`, password: 'x' }).timeout(5000).expect(503, { message: 'service-unavailable' });

      await proxy.up();
      await eventually(10_000, async () => {
        await client.get('/ping_db').expect(200);
      });
      await client.post('/v1/chats', { chat_name: 'after' }, u.session).expect(201);
      const names = (await p.infra.db('chats').whereIn('chat_name', ['before', 'during', 'after']).select('chat_name')).map((r) => r.chat_name as string);
      assert.deepEqual(names.sort(), ['after', 'before']);
    });
  });

  describe('Redis outage (services mode)', function () {
    this.timeout(30_000);
    const redisUrl = new URL(testEnv().REDIS_URL);
    const proxy = new TcpProxy(redisUrl.hostname, Number(redisUrl.port || 6379));
    let p: Proxied;

    before(async () => {
      p = await proxiedApp(proxy, (port) => {
        const url = new URL(redisUrl);
        url.port = String(port);
        return { REDIS_URL: url.toString() };
      });
    });
    after(async () => p.close());

    it('answers 503 service-unavailable for operations needing Redis, /ping 200, and recovers by itself', async () => {
      const { client } = p.app;
      const u = await buildUser(client);
      await proxy.down();
      await client.get('/ping').timeout(5000).expect(200);
      await client.post('/v1/chats', { chat_name: 'x' }, u.session).timeout(5000).expect(503, { message: 'service-unavailable' });
      // The real-time upgrade needs Redis too (its rate limit, the session): 503 as well, never 500.
      const upgrade = await refused(client.port, { session: u.session });
      assert.deepEqual([upgrade.status, upgrade.body], [503, { message: 'service-unavailable' }]);
      await proxy.up();
      await eventually(15_000, async () => {
        await client.post('/v1/chats', { chat_name: 'x' }, u.session).expect(201);
      });
    });
  });
}
