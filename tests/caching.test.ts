import assert from 'node:assert/strict';
import { harness, startApp, startInfra, type Running } from './helpers/harness';
import { MODE, RUN_ID, databaseUrl } from './helpers/env';
import { TcpProxy } from './helpers/tcp-proxy';
import { buildChat, buildUser, getPage, joinChat, postMessage, type Page } from './helpers/factories';
import type { BuiltInfra } from '../messenger/infra';
import { MemoryKv, type Kv } from '../messenger/infra/kv';
import { Writable } from 'node:stream';
import pino from 'pino';
import { waitUntil } from './helpers/wait';

async function setup(client: Running['client']) {
  const u = await buildUser(client);
  const chatId = await buildChat(client, u.session);
  const userId = await joinChat(client, chatId, u.session);
  await postMessage(client, chatId, userId, 'first', u.session);
  return { u, chatId, userId };
}

describe('caching of chat pages', () => {
  it('answers X-Cache: MISS, then HIT with the same body', async () => {
    const { client } = harness().app;
    const { u, chatId } = await setup(client);
    const miss = await client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200).expect('X-Cache', 'MISS');
    const hit = await client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200).expect('X-Cache', 'HIT');
    assert.deepEqual(hit.body, miss.body);
    assert.match(String(hit.headers['content-type']), /application\/json/);
  });

  it('answers a hit byte for byte as the miss, also past ASCII, with the same Content-Type and Content-Length', async () => {
    const { client } = harness().app;
    const { u, chatId, userId } = await setup(client);
    await postMessage(client, chatId, userId, 'привет 👋 naïve « ok »', u.session);
    const miss = await client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200).expect('X-Cache', 'MISS');
    const hit = await client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200).expect('X-Cache', 'HIT');
    assert.equal(hit.text, miss.text);
    assert.equal(hit.headers['content-type'], miss.headers['content-type']);
    assert.equal(hit.headers['content-length'], String(Buffer.byteLength(miss.text)));
    assert.ok((hit.body as Page).messages.some((m) => m.text === 'привет 👋 naïve « ok »'));
  });

  it('keys pages by limit and cursor', async () => {
    const { client } = harness().app;
    const { u, chatId, userId } = await setup(client);
    const second = await postMessage(client, chatId, userId, 'second', u.session);
    await client.get(`/v1/chats/${chatId}/messages?limit=1`, u.session).expect('X-Cache', 'MISS');
    const one = await client.get(`/v1/chats/${chatId}/messages?limit=1`, u.session).expect('X-Cache', 'HIT');
    const two = await client.get(`/v1/chats/${chatId}/messages?limit=2`, u.session).expect('X-Cache', 'MISS');
    assert.equal((one.body as Page).messages.length, 1);
    assert.equal((two.body as Page).messages.length, 2);
    const first = (one.body as Page).next.iterator;
    const after = await client.get(`/v1/chats/${chatId}/messages?limit=5&from=${first}`, u.session).expect('X-Cache', 'MISS');
    assert.deepEqual((after.body as Page).messages.map((m) => m.message_id), [second]);
  });

  it('never returns a stale page after a write returned 201, on this or another instance', async () => {
    const other = await startApp(harness().infra);
    try {
      const { client } = harness().app;
      const { u, chatId, userId } = await setup(client);
      for (const reader of [client, other.client]) {
        await reader.get(`/v1/chats/${chatId}/messages?limit=100`, u.session).expect(200);
        await reader.get(`/v1/chats/${chatId}/messages?limit=100`, u.session).expect('X-Cache', 'HIT');
      }
      const id = await postMessage(other.client, chatId, userId, 'fresh', u.session);
      for (const reader of [client, other.client]) {
        const page = (await reader.get(`/v1/chats/${chatId}/messages?limit=100`, u.session).expect(200)).body as Page;
        assert.equal(page.messages.at(-1)?.message_id, id, 'stale page served after a 201');
      }
    } finally {
      await other.close();
    }
  });

  it('never serves a cached page to an account that may not read the chat', async () => {
    const { client } = harness().app;
    const { u, chatId } = await setup(client);
    const page = await client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200);
    await client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect('X-Cache', 'HIT');
    const stranger = await buildUser(client);
    await client.get(`/v1/chats/${chatId}/messages?limit=10`, stranger.session).expect(404, { message: 'chat-not-found' });
    // Once it joins, it may read, and is served the same page.
    await joinChat(client, chatId, stranger.session);
    const joined = await client.get(`/v1/chats/${chatId}/messages?limit=10`, stranger.session).expect(200);
    assert.deepEqual(joined.body, page.body);
    assert.deepEqual((joined.body as Page).messages.map((m) => m.text), ['first']);
  });

  it('with auth off (no auth in APPS), caches pages for every caller alike', async () => {
    const open = await startApp(harness().infra, { APPS: 'chats,messages,caching' });
    try {
      const { client } = open;
      const chatId = await buildChat(client);
      const userId = await joinChat(client, chatId);
      const id = await postMessage(client, chatId, userId, 'open chat');
      const miss = await client.get(`/v1/chats/${chatId}/messages?limit=10`).expect(200).expect('X-Cache', 'MISS');
      const hit = await client.get(`/v1/chats/${chatId}/messages?limit=10`).expect(200).expect('X-Cache', 'HIT');
      assert.deepEqual(hit.body, miss.body);
      assert.deepEqual((hit.body as Page).messages.map((m) => m.message_id), [id]);
    } finally {
      await open.close();
    }
  });

  it('is off without caching in APPS: no X-Cache header', async () => {
    const off = await startApp(harness().infra, { APPS: 'auth,chats,messages' });
    try {
      const { u, chatId } = await setup(off.client);
      const res = await off.client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200);
      assert.equal(res.headers['x-cache'], undefined);
    } finally {
      await off.close();
    }
  });
});

describe('caching when the store refuses its writes', () => {
  it('a page that cannot be cached and a version that cannot be bumped are logged; the requests still succeed', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    });
    const { infra } = harness();
    // The real store, except that writing a cached page or bumping a chat's version fails.
    const kv = new Proxy(infra.kv, {
      get(target, prop) {
        if (prop === 'set') return (key: string, ...rest: unknown[]) => (key.includes('page:') ? Promise.reject(new Error('page write refused')) : (target.set as (...a: unknown[]) => Promise<unknown>).call(target, key, ...rest));
        if (prop === 'incr') return (key: string) => (key.includes('cv:') ? Promise.reject(new Error('version bump refused')) : target.incr(key));
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as Kv;
    const app = await startApp({ ...infra, kv, log: pino({ level: 'warn' }, sink) });
    try {
      const { u, chatId, userId } = await setup(app.client);
      const bump = lines.find((l) => l.msg === 'could not invalidate cached pages; retrying every second until the store answers');
      assert.ok(bump, 'the failed version bump is logged');
      assert.equal(bump.level, 50);
      assert.match(JSON.stringify(bump.err), /version bump refused/);
      const first = await app.client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200).expect('X-Cache', 'MISS');
      const miss = lines.find((l) => l.msg === 'could not cache a page');
      assert.ok(miss, 'the failed page write is logged');
      assert.equal(miss.level, 40);
      assert.match(JSON.stringify(miss.err), /page write refused/);
      // Nothing was cached, so the next read is a miss again, with the same page.
      const again = await app.client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200).expect('X-Cache', 'MISS');
      assert.deepEqual(again.body, first.body);
      assert.deepEqual((first.body as Page).messages.map((m) => [m.text, m.user_id]), [['first', userId]]);
    } finally {
      await app.close();
    }
  });
});

describe('caching when a version bump fails for a while', () => {
  it('the bump is made again once the store answers: the page then has the message, not only once it expires', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    });
    // An infrastructure of its own: the suite's app, on a shared one, would bump the version itself.
    const infra = await startInfra({ REDIS_PREFIX: `test:${RUN_ID}:bump:` });
    let refuseBumps = false;
    const kv = new Proxy(infra.kv, {
      get(target, prop) {
        if (prop === 'incr') {
          return (key: string, ...rest: unknown[]) =>
            refuseBumps && key.includes('cv:')
              ? Promise.reject(new Error('Stream isn\'t writeable and enableOfflineQueue options is false'))
              : (target.incr as (...a: unknown[]) => Promise<number>).call(target, key, ...rest);
        }
        const v: unknown = Reflect.get(target, prop, target);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as Kv;
    const app = await startApp({ ...infra, kv, log: pino({ level: 'info' }, sink) });
    try {
      const { u, chatId, userId } = await setup(app.client);
      const page = `/v1/chats/${chatId}/messages?limit=10`;
      await app.client.get(page, u.session).expect(200).expect('X-Cache', 'MISS');
      await app.client.get(page, u.session).expect(200).expect('X-Cache', 'HIT');
      refuseBumps = true;
      await postMessage(app.client, chatId, userId, 'second', u.session);
      await postMessage(app.client, chatId, userId, 'third', u.session);
      const failed = lines.filter((l) => l.msg === 'could not invalidate cached pages; retrying every second until the store answers');
      assert.equal(failed.length, 1, 'logged once per outage, not once per message');
      assert.equal(failed[0].level, 50);
      // Meanwhile the page is the one cached before them: what the retry is for.
      const stale = await app.client.get(page, u.session).expect(200).expect('X-Cache', 'HIT');
      assert.deepEqual((stale.body as Page).messages.map((m) => m.text), ['first']);
      refuseBumps = false;
      const texts = async () => ((await app.client.get(page, u.session).expect(200)).body as Page).messages.map((m) => m.text);
      await waitUntil('the page to show the messages stored while the bump failed', async () => (await texts()).includes('third'), 10_000, 100);
      assert.deepEqual(await texts(), ['first', 'second', 'third']);
      assert.ok(lines.some((l) => l.msg === 'cached pages invalidated after the store came back'));
    } finally {
      await app.close();
      await infra.shutdown.run();
    }
  });
});

if (MODE === 'services') {
  describe('caching with PostgreSQL down (services mode)', function () {
    this.timeout(30_000);
    const proxy = new TcpProxy('127.0.0.1', Number(new URL(databaseUrl()).port || 5432));
    let infra: BuiltInfra;
    let app: Running;

    before(async () => {
      const url = new URL(databaseUrl());
      url.port = String(await proxy.up());
      const env = { DATABASE_URL: url.toString(), DB_TIMEOUT_MS: '1000' };
      infra = await startInfra(env);
      app = await startApp(infra, env);
    });
    after(async () => {
      await app.close();
      await infra.shutdown.run();
      await proxy.down();
    });

    it('still serves a cached page; an uncached one answers 503', async () => {
      const { client } = app;
      const { u, chatId } = await setup(client);
      const cached = await client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200);
      await proxy.down();
      try {
        const hit = await client.get(`/v1/chats/${chatId}/messages?limit=10`, u.session).expect(200).expect('X-Cache', 'HIT');
        assert.deepEqual(hit.body, cached.body);
        await client.get(`/v1/chats/${chatId}/messages?limit=11`, u.session).timeout(5000).expect(503, { message: 'service-unavailable' });
      } finally {
        await proxy.up();
      }
    });
  });
}

describe('caching keys', () => {
  it('keys a page by its query in a canonical order: the same parameters in another order hit', async () => {
    const { client } = harness().app;
    const { u, chatId, userId } = await setup(client);
    const second = await postMessage(client, chatId, userId, 'second', u.session);
    const first = await getPage(client, chatId, u.session, 1);
    const a = await client.get(`/v1/chats/${chatId}/messages?limit=5&from=${first.messages[0].message_id}`, u.session).expect(200).expect('X-Cache', 'MISS');
    const b = await client.get(`/v1/chats/${chatId}/messages?from=${first.messages[0].message_id}&limit=5`, u.session).expect(200).expect('X-Cache', 'HIT');
    assert.deepEqual(b.body, a.body);
    assert.deepEqual((a.body as Page).messages.map((m) => m.message_id), [second]);
  });

  it('keys a page by the parameters the operation declares: others are ignored, by the key as by the handler', async () => {
    const { client } = harness().app;
    const { u, chatId } = await setup(client);
    const miss = await client.get(`/v1/chats/${chatId}/messages?limit=5`, u.session).expect(200).expect('X-Cache', 'MISS');
    // Cache busters and made-up parameters read the one stored page: they cannot multiply it into many keys.
    for (const junk of ['_=1700000000', `junk=${'y'.repeat(100)}`, 'x=1&x=2', 'a=1%26limit%3D6']) {
      const res = await client.get(`/v1/chats/${chatId}/messages?limit=5&${junk}`, u.session).expect(200).expect('X-Cache', 'HIT');
      assert.equal(res.text, miss.text);
    }
  });

  it('answers a declared value in another spelling from the database and never stores it', async () => {
    const { client } = harness().app;
    const { u, chatId, userId } = await setup(client);
    await postMessage(client, chatId, userId, 'second', u.session);
    const first = (await getPage(client, chatId, u.session, 1)).messages[0].message_id;
    const dashed = `${first.slice(0, 8)}-${first.slice(8, 12)}-${first.slice(12, 16)}-${first.slice(16, 20)}-${first.slice(20)}`;
    const canonical = await client.get(`/v1/chats/${chatId}/messages?limit=5&from=${first}`, u.session).expect(200).expect('X-Cache', 'MISS');
    // (The handler reads 05 as 5 and refuses +5 and a repeated limit; none of them is looked up or stored.)
    for (const [odd, status] of [['limit=05', 200], ['limit=%2B5', 400], ['limit=5&limit=5', 400]] as const) {
      for (let i = 0; i < 2; i++) {
        const res = await client.get(`/v1/chats/${chatId}/messages?${odd}&from=${first}`, u.session);
        assert.equal(res.status, status, odd);
        assert.equal(res.headers['x-cache'], undefined, `${odd} went through the cache`);
        if (res.status === 200) assert.equal(res.text, canonical.text);
      }
    }
    for (const from of [dashed, first.toUpperCase()]) {
      for (let i = 0; i < 2; i++) {
        const res = await client.get(`/v1/chats/${chatId}/messages?limit=5&from=${from}`, u.session).expect(200);
        assert.equal(res.headers['x-cache'], undefined, `from=${from} went through the cache`);
        assert.equal(res.text, canonical.text);
      }
    }
    await client.get(`/v1/chats/${chatId}/messages?limit=5&from=${first}`, u.session).expect(200).expect('X-Cache', 'HIT');
  });

  it('stores at most CACHE_CHAT_MAX_BYTES of one chat\'s pages per CACHE_TTL_SECONDS; past that, pages are answered and not stored', async () => {
    const app = await startApp(harness().infra, { CACHE_CHAT_MAX_BYTES: '1000' });
    try {
      const { client } = app;
      const { u, chatId, userId } = await setup(client);
      for (let i = 0; i < 3; i++) await postMessage(client, chatId, userId, `${i} ${'x'.repeat(300)}`, u.session);
      const one = await client.get(`/v1/chats/${chatId}/messages?limit=2`, u.session).expect(200).expect('X-Cache', 'MISS');
      // What the chat's share holds once the page is stored: the page and the version it was read at.
      assert.ok(Buffer.byteLength(one.text) + 2 <= 1000, 'the first page fits');
      await client.get(`/v1/chats/${chatId}/messages?limit=2`, u.session).expect(200).expect('X-Cache', 'HIT');
      const two = await client.get(`/v1/chats/${chatId}/messages?limit=3`, u.session).expect(200).expect('X-Cache', 'MISS');
      assert.ok(Buffer.byteLength(one.text) + Buffer.byteLength(two.text) + 4 > 1000, 'the second one does not');
      const again = await client.get(`/v1/chats/${chatId}/messages?limit=3`, u.session).expect(200).expect('X-Cache', 'MISS');
      assert.equal(again.text, two.text);
      // What was stored stays served.
      await client.get(`/v1/chats/${chatId}/messages?limit=2`, u.session).expect(200).expect('X-Cache', 'HIT');
      // Another chat has a share of its own.
      const other = await setup(client);
      await client.get(`/v1/chats/${other.chatId}/messages?limit=2`, other.u.session).expect(200).expect('X-Cache', 'MISS');
      await client.get(`/v1/chats/${other.chatId}/messages?limit=2`, other.u.session).expect(200).expect('X-Cache', 'HIT');
    } finally {
      await app.close();
    }
  });

  it('a cached page is only served to the account it was read by, until the other one reads it itself', async () => {
    const { client } = harness().app;
    const { u, chatId } = await setup(client);
    await client.get(`/v1/chats/${chatId}/messages?limit=7`, u.session).expect(200).expect('X-Cache', 'MISS');
    const other = await buildUser(client);
    await joinChat(client, chatId, other.session);
    // Allowed, but not yet known to be: the handler answers (MISS), then it is known (HIT).
    await client.get(`/v1/chats/${chatId}/messages?limit=7`, other.session).expect(200).expect('X-Cache', 'MISS');
    await client.get(`/v1/chats/${chatId}/messages?limit=7`, other.session).expect(200).expect('X-Cache', 'HIT');
  });

  it('HEAD is not served from nor stored in the cache', async () => {
    const { client } = harness().app;
    const { u, chatId } = await setup(client);
    const path = `/v1/chats/${chatId}/messages?limit=3`;
    const head = await client.request('HEAD', path, u.session).expect(200);
    assert.equal(head.headers['x-cache'], undefined);
    await client.get(path, u.session).expect(200).expect('X-Cache', 'MISS');
    await client.get(path, u.session).expect(200).expect('X-Cache', 'HIT');
    const again = await client.request('HEAD', path, u.session).expect(200);
    assert.equal(again.headers['x-cache'], undefined);
  });

  it('caches only the operations marked x-cache-chat: the chat list is never cached and always fresh', async () => {
    const { client } = harness().app;
    const { u, chatId } = await setup(client);
    const first = await client.get('/v1/chats', u.session).expect(200);
    assert.equal(first.headers['x-cache'], undefined);
    const another = await buildChat(client, u.session);
    const second = await client.get('/v1/chats', u.session).expect(200);
    assert.equal(second.headers['x-cache'], undefined);
    assert.notDeepEqual(second.body, first.body);
    assert.ok(JSON.stringify(second.body).includes(chatId));
    assert.ok(!JSON.stringify(first.body).includes(another) && JSON.stringify(second.body).includes(another));
  });
});

describe('caching: the bound of all cached pages together (embedded mode)', () => {
  it('the in-process store keeps at most its byte bound of page keys, dropping the least recently used; other keys are never dropped', async () => {
    const kv = new MemoryKv(Date.now, { prefix: 'page:', maxBytes: 1000 });
    try {
      const page = 'x'.repeat(291); // with its 9-byte key: 300 bytes
      await kv.set('cv:chat', '7');
      for (const k of ['page:000a', 'page:000b', 'page:000c']) await kv.set(k, page, 60);
      assert.equal(kv.evictableBytes(), 900);
      // Reading a makes b the least recently used.
      assert.equal(await kv.get('page:000a'), page);
      await kv.set('page:000d', page, 60);
      assert.deepEqual(await kv.mget(['page:000a', 'page:000b', 'page:000c', 'page:000d']), [page, null, page, page]);
      assert.ok(kv.evictableBytes() <= 1000);
      // A page larger than the whole bound is not kept, and takes nothing else with it but what it must.
      await kv.set('page:000e', 'y'.repeat(2000), 60);
      assert.equal(await kv.get('page:000e'), null);
      assert.ok(kv.evictableBytes() <= 1000);
      assert.equal(await kv.get('cv:chat'), '7', 'a key outside the prefix is never evicted');
      await kv.del('page:000a');
      await kv.del('page:000c');
      await kv.del('page:000d');
      assert.equal(kv.evictableBytes(), 0);
    } finally {
      await kv.close();
    }
  });

  it(
    MODE === 'embedded'
      ? 'with many chats read, the process holds at most CACHE_MEMORY_MAX_BYTES of pages: the least recently read chat\'s page is a MISS again'
      : 'CACHE_MEMORY_MAX_BYTES leaves pages in Redis alone (Redis bounds them with maxmemory): the first chat\'s page is still a HIT',
    async () => {
        const infra = await startInfra({ CACHE_MEMORY_MAX_BYTES: '3000' });
        try {
          const app = await startApp(infra, { CACHE_MEMORY_MAX_BYTES: '3000' });
          try {
            const { client } = app;
            const chats: Awaited<ReturnType<typeof setup>>[] = [];
            for (let i = 0; i < 8; i++) {
              const c = await setup(client);
              await postMessage(client, c.chatId, c.userId, 'z'.repeat(400), c.u.session);
              chats.push(c);
            }
            const read = (c: (typeof chats)[number]) => client.get(`/v1/chats/${c.chatId}/messages?limit=10`, c.u.session).expect(200);
            const first = await read(chats[0]!).expect('X-Cache', 'MISS');
            assert.ok(Buffer.byteLength(first.text) > 400 && Buffer.byteLength(first.text) < 1000);
            await read(chats[0]!).expect('X-Cache', 'HIT');
            // Each chat is far below its own share (CACHE_CHAT_MAX_BYTES); together they pass the overall bound.
            for (const c of chats.slice(1)) await read(c).expect('X-Cache', 'MISS');
            await read(chats[0]!).expect('X-Cache', MODE === 'embedded' ? 'MISS' : 'HIT');
            await read(chats[7]!).expect('X-Cache', 'HIT');
            if (infra.kv instanceof MemoryKv) assert.ok(infra.kv.evictableBytes() <= 3000);
          } finally {
            await app.close();
          }
        } finally {
          await infra.shutdown.run();
        }
    },
  );
});
