import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../messenger/config';
import { AppSetupError, buildApps } from '../messenger/http/app';
import { harness, startApp, type Running } from './helpers/harness';
import { buildChat, buildUser, getPage, joinChat, postMessage, badParameters } from './helpers/factories';

describe('apps and settings', () => {
  describe('with AUTH_DISABLED=1', () => {
    let open: Running;
    before(async () => {
      open = await startApp(harness().infra, { AUTH_DISABLED: '1' });
    });
    after(async () => open.close());

    it('chat and message operations work without a session, the name being the identity', async () => {
      const { client } = open;
      const chatId = await buildChat(client);
      const bob = await joinChat(client, chatId, undefined, 'bob');
      assert.equal(await joinChat(client, chatId, undefined, 'bob'), bob, 'same name, same user_id');
      const other = await joinChat(client, chatId, undefined, 'carol');
      assert.notEqual(other, bob);
      await postMessage(client, chatId, bob, 'no accounts here');
      const page = await getPage(client, chatId, undefined, 10);
      assert.deepEqual(page.messages.map((m) => [m.user_name, m.text]), [['bob', 'no accounts here']]);
    });

    it('removes the auth operations: register, login and logout answer 404 not-found', async () => {
      const { client } = open;
      await client.post('/v1/auth/register', { user_name: 'x', password: 'y' }).expect(404, { message: 'not-found' });
      await client.post('/v1/auth/login', { user_name: 'x', password: 'y' }).expect(404, { message: 'not-found' });
      await client.post('/v1/auth/logout').expect(404, { message: 'not-found' });
    });

    it('answers 404 not-found (not 401) for an unknown path', async () => {
      await open.client.get('/nowhere').expect(404, { message: 'not-found' });
    });
  });

  it('APPS=auth,chats removes exactly the message operations', async () => {
    const app = await startApp(harness().infra, { APPS: 'auth,chats' });
    try {
      const { client } = app;
      const u = await buildUser(client);
      const chatId = await buildChat(client, u.session);
      const userId = await joinChat(client, chatId, u.session);
      await client.post(`/v1/chats/${chatId}/messages?user_id=${userId}`, { message: 'x' }, u.session).expect(404, { message: 'not-found' });
      await client.get(`/v1/chats/${chatId}/messages?limit=1`, u.session).expect(404, { message: 'not-found' });
      await client.get('/ping').expect(200);
    } finally {
      await app.close();
    }
  });

  it('a session made on one app is accepted by another sharing the stores (no in-process state)', async () => {
    const a = await startApp(harness().infra);
    const b = await startApp(harness().infra);
    try {
      const u = await buildUser(a.client);
      await buildChat(b.client, u.session);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('refuses to start an app whose required app is off, naming both', () => {
    const config = loadConfig({ APPS: 'auth,messages', DATA_DIR: 'memory://' });
    const { infra } = harness();
    assert.throws(() => buildApps({ ...infra, config }), (err: unknown) => {
      assert.ok(err instanceof AppSetupError);
      assert.match(err.message, /app "messages" requires app "chats"/);
      return true;
    });
  });

  it('refuses an unknown app name and every other bad setting in one error', () => {
    assert.throws(
      () => loadConfig({ APPS: 'auth,chatz', PORT: 'eighty', BCRYPT_COST: '3', LOG_LEVEL: 'loud', DATABASE_URL: 'mysql://x' }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.problems.length, 5, err.message);
        for (const name of ['APPS', 'PORT', 'BCRYPT_COST', 'LOG_LEVEL', 'DATABASE_URL']) assert.match(err.message, new RegExp(name));
        return true;
      },
    );
  });

  it('refuses WORKERS_NUM above 1 in the embedded mode', () => {
    assert.throws(() => loadConfig({ WORKERS_NUM: '2' }), /WORKERS_NUM above 1 needs DATABASE_URL and REDIS_URL/);
  });

  it('refuses SEARCH_QUEUE and SYNC_QUEUE that name one queue (or one the other\'s dead-letter queue), in any mode', () => {
    // Sharing a queue, the search worker dead-letters every queued message it takes and the synchronizer every search task.
    for (const env of [
      { SEARCH_QUEUE: 'messenger', SYNC_QUEUE: 'messenger' },
      { SYNC_QUEUE: 'messenger.search' },
      { SEARCH_QUEUE: 'messenger.sync.dead' },
      { SYNC_QUEUE: 'messenger.search.dead' },
    ]) {
      for (const mode of [{}, { RMQ_URL: 'amqp://guest:guest@127.0.0.1:5672' }]) {
        assert.throws(() => loadConfig({ DATA_DIR: 'memory://', ...mode, ...env }), (err: unknown) => {
          assert.ok(err instanceof ConfigError, JSON.stringify(env));
          assert.match(err.message, /SEARCH_QUEUE .* and SYNC_QUEUE .* must name different queues/);
          return true;
        });
      }
    }
    assert.doesNotThrow(() => loadConfig({ DATA_DIR: 'memory://', SEARCH_QUEUE: 'a.search', SYNC_QUEUE: 'a.sync' }));
  });

  it('builds DATABASE_URL from the original POSTGRES_* settings', () => {
    const c = loadConfig({ POSTGRES_HOSTS: 'db1,db2', POSTGRES_USER: 'me', POSTGRES_PASSWORD: 'p@ss', POSTGRES_DB: 'chat' });
    assert.equal(c.databaseUrl, 'postgres://me:p%40ss@db1:5432/chat');
  });
});

describe('request errors', () => {
  it('answers 413 payload-too-large for a body over BODY_LIMIT and stores nothing', async () => {
    const small = await startApp(harness().infra, { BODY_LIMIT: '2kb' });
    try {
      const { client } = small;
      const u = await buildUser(client);
      const name = `big-${Date.now()}`;
      await client.post('/v1/chats', { chat_name: name, filler: 'x'.repeat(4096) }, u.session).expect(413, { message: 'payload-too-large' });
      const rows = await harness().infra.db('chats').where('chat_name', name);
      assert.equal(rows.length, 0);
    } finally {
      await small.close();
    }
  });

  it('answers 404 not-found for an unknown path with a valid session', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    await client.get('/v1/nothing/here', u.session).expect(404, { message: 'not-found' });
  });

  it('answers 405 method-not-allowed for a wrong method on a known path', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    await client.request('PUT', '/v1/chats', u.session).expect(405, { message: 'method-not-allowed' });
    await client.request('DELETE', `/v1/chats/${'a'.repeat(32)}/messages`, u.session).expect(405, { message: 'method-not-allowed' });
  });

  it('reads the body as JSON whatever Content-Type says, like the original', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const res = await client
      .request('POST', '/v1/chats', u.session)
      .set('Content-Type', 'application/x-www-form-urlencoded')
      .send('{"chat_name": "form-typed"}')
      .expect(201);
    const row = await harness().infra.db('chats').where('id', (res.body as { chat_id: string }).chat_id).first('chat_name');
    assert.equal(row.chat_name, 'form-typed');
  });

  it('answers 400 bad-parameters for a JSON body that is not an object', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    for (const body of ['"just a string"', '42', 'null', '[]']) {
      await client.post('/v1/chats', body, u.session).expect(400).expect(badParameters);
    }
  });
});
