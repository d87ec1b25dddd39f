import assert from 'node:assert/strict';
import http from 'node:http';
import { Writable } from 'node:stream';
import pino from 'pino';
import supertest from 'supertest';
import { createApp } from '../messenger/http/app';
import { loadConfig } from '../messenger/config';
import { REDACT_PATHS } from '../messenger/infra/logger';
import { testEnv } from './helpers/env';
import { harness } from './helpers/harness';
import { buildChat, buildUser, joinChat, postMessage, uniq } from './helpers/factories';

describe('security', () => {
  it('session ids are 128 random bits: unique, 32 hex, no shared prefix between consecutive logins', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const ids: string[] = [];
    for (let i = 0; i < 60; i++) {
      const res = await client.post('/v1/auth/login', { user_name: u.userName, password: u.password }).expect(201);
      ids.push((res.body as { session_id: string }).session_id);
    }
    assert.equal(new Set(ids).size, ids.length);
    for (const id of ids) assert.match(id, /^[0-9a-f]{32}$/);
    // A time- or counter-based id shares long prefixes with the next one; random ones almost never share 4 hex digits.
    const shared = ids.slice(1).filter((id, i) => id.slice(0, 4) === ids[i].slice(0, 4)).length;
    assert.ok(shared <= 1, `${shared} consecutive ids share a 4-digit prefix`);
    // Every hex digit shows up in every position across 60 ids with overwhelming probability only if they are random.
    const distinct = Array.from({ length: 32 }, (_, p) => new Set(ids.map((id) => id[p])).size);
    assert.ok(Math.min(...distinct) >= 8, `a position of the id takes only ${Math.min(...distinct)} values`);
  });

  it('another account\'s chat is indistinguishable from one that does not exist', async () => {
    const { client } = harness().app;
    const owner = await buildUser(client);
    const stranger = await buildUser(client);
    const chatId = await buildChat(client, owner.session);
    const ownerId = await joinChat(client, chatId, owner.session);
    await postMessage(client, chatId, ownerId, 'private', owner.session);
    const foreign = await client.get(`/v1/chats/${chatId}/messages?limit=10`, stranger.session);
    const missing = await client.get(`/v1/chats/${'9'.repeat(32)}/messages?limit=10`, stranger.session);
    assert.equal(foreign.status, missing.status);
    assert.deepEqual(foreign.body, missing.body);
    // Even with a cursor that exists in that chat, nothing leaks through bad-cursor.
    const page = await client.get(`/v1/chats/${chatId}/messages?limit=1`, owner.session).expect(200);
    const cursor = (page.body as { next: { iterator: string } }).next.iterator;
    await client.get(`/v1/chats/${chatId}/messages?limit=10&from=${cursor}`, stranger.session).expect(404, { message: 'chat-not-found' });
  });

  it('stores SQL-looking and HTML-looking names verbatim and executes nothing', async () => {
    const { client } = harness().app;
    const name = `x'); DROP TABLE users; -- <img src=x onerror=alert(1)> ${uniq()}`;
    await client.post('/v1/auth/register', { user_name: name, password: 'pw' }).expect(201);
    const login = await client.post('/v1/auth/login', { user_name: name, password: 'pw' }).expect(201);
    const session = (login.body as { session_id: string }).session_id;
    const chatName = "'; DELETE FROM chats; --";
    const chatId = await buildChat(client, session, chatName);
    const userId = await joinChat(client, chatId, session, '<b>bold</b>');
    await postMessage(client, chatId, userId, 'hi', session);
    const page = await client.get(`/v1/chats/${chatId}/messages?limit=1`, session).expect(200);
    assert.equal((page.body as { messages: { user_name: string }[] }).messages[0].user_name, '<b>bold</b>');
    const row = await harness().infra.db('chats').where('id', chatId).first('chat_name');
    assert.equal(row.chat_name, chatName);
    assert.ok((await harness().infra.db('users').where('user_name', name).first()) !== undefined);
  });

  it('error responses also carry X-Content-Type-Options: nosniff and JSON, never HTML, and no server banner', async () => {
    const { client } = harness().app;
    for (const res of [await client.get('/nope'), await client.post('/v1/auth/login', '{bad json'), await client.request('PATCH', '/ping')]) {
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      assert.match(String(res.headers['content-type']), /^application\/json/);
      assert.equal(res.headers.server, undefined);
      assert.equal(res.headers['x-powered-by'], undefined);
    }
  });

  it('logs at debug level contain no password and no session id', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const log = pino({ level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, sink);
    const { infra } = harness();
    const web = await createApp({ ...infra, log, config: loadConfig(testEnv({ LOG_LEVEL: 'debug', NGINX_THROTTLING: '1', APPS: 'auth,chats,messages' })) });
    const server = http.createServer(web.koa.callback());
    try {
      const agent = supertest(server);
      const name = uniq();
      const password = `pw-${uniq()}`;
      await agent.post('/v1/auth/register').send({ user_name: name, password }).expect(201);
      await agent.post('/v1/auth/login').send({ user_name: name, password: 'wrong-' + password }).expect(400);
      const login = await agent.post('/v1/auth/login').send({ user_name: name, password }).expect(201);
      const session = (login.body as { session_id: string }).session_id;
      await agent.post('/v1/chats').set('Authorization', `session_id ${session}`).send({ chat_name: 'x' }).expect(201);
      await agent.get('/nowhere').set('Authorization', `session_id ${session}`).expect(404);
      await agent.post('/v1/auth/logout').set('Authorization', `session_id ${session}`).expect(200);
      const all = lines.join('');
      assert.ok(lines.length >= 6, 'expected request logs');
      assert.ok(!all.includes(password), 'a password was logged');
      assert.ok(!all.includes(session), 'a session id was logged');
    } finally {
      server.close();
    }
  });
});
