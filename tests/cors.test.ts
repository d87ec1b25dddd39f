import assert from 'node:assert/strict';
import supertest from 'supertest';
import { loadConfig, ConfigError } from '../messenger/config';
import { harness, startApp, type Running } from './helpers/harness';
import { buildUser } from './helpers/factories';

describe('CORS', () => {
  let app: Running;
  const allowed = 'https://app.example.com';
  before(async () => {
    app = await startApp(harness().infra, { CORS_ORIGINS: `${allowed}, http://localhost:5173` });
  });
  after(async () => {
    await app.close();
  });

  it('answers a preflight from an allowed origin with 204 before any session check', async () => {
    const res = await supertest(app.client.server)
      .options('/v1/chats')
      .set('Origin', allowed)
      .set('Access-Control-Request-Method', 'POST')
      .set('Access-Control-Request-Headers', 'authorization, content-type')
      .expect(204);
    assert.equal(res.headers['access-control-allow-origin'], allowed);
    assert.equal(res.headers['access-control-allow-methods'], 'GET, HEAD, POST');
    assert.match(res.headers['access-control-allow-headers'], /Authorization/);
    assert.match(res.headers['access-control-allow-headers'], /Idempotency-Key/);
    assert.equal(res.headers.vary, 'Origin');
  });

  it('refuses a preflight from any other origin with 403 origin-not-allowed', async () => {
    const res = await supertest(app.client.server)
      .options('/v1/chats')
      .set('Origin', 'https://evil.example.com')
      .set('Access-Control-Request-Method', 'POST')
      .expect(403);
    assert.deepEqual(res.body, { message: 'origin-not-allowed' });
    assert.equal(res.headers['access-control-allow-origin'], undefined);
  });

  it('lets an allowed origin read answers and their headers; gives other origins no CORS headers', async () => {
    const u = await buildUser(app.client);
    const ok = await app.client.post('/v1/chats', { chat_name: 'x' }, u.session).set('Origin', allowed).expect(201);
    assert.equal(ok.headers['access-control-allow-origin'], allowed);
    assert.match(ok.headers['access-control-expose-headers'], /X-Request-Id/);
    const other = await app.client.get('/ping').set('Origin', 'https://evil.example.com').expect(200);
    assert.equal(other.headers['access-control-allow-origin'], undefined);
  });

  it('is off by default: no origin is allowed', async () => {
    await supertest(harness().app.client.server)
      .options('/v1/chats')
      .set('Origin', allowed)
      .set('Access-Control-Request-Method', 'GET')
      .expect(403, { message: 'origin-not-allowed' });
  });

  it('refuses a CORS_ORIGINS entry that is not an origin', () => {
    assert.throws(() => loadConfig({ CORS_ORIGINS: 'https://a.example/path', DATA_DIR: 'memory://' }), ConfigError);
    assert.throws(() => loadConfig({ CORS_ORIGINS: '*', DATA_DIR: 'memory://' }), ConfigError);
    assert.deepEqual(loadConfig({ CORS_ORIGINS: 'https://a.example:8443', DATA_DIR: 'memory://' }).corsOrigins, ['https://a.example:8443']);
  });
});
