import assert from 'node:assert/strict';
import { runChecksWithVerdict } from '../messenger/infra/health';
import { harness } from './helpers/harness';

describe('health', () => {
  it('GET /ping answers 200 with an empty object', async () => {
    await harness().app.client.get('/ping').expect(200, {});
  });

  it('GET /ping answers without a session and sets X-Content-Type-Options: nosniff', async () => {
    await harness()
      .app.client.get('/ping')
      .expect('X-Content-Type-Options', 'nosniff')
      .expect((res) => {
        if (res.headers['x-powered-by'] !== undefined || res.headers.server !== undefined) {
          throw new Error('server banner sent');
        }
      });
  });

  it('GET /ping_db answers 200 when PostgreSQL answers', async () => {
    await harness().app.client.get('/ping_db').expect(200, {});
  });

  it('DELETE /ping answers 405 method-not-allowed', async () => {
    await harness().app.client.request('DELETE', '/ping').expect(405, { message: 'method-not-allowed' });
  });
});

describe('the reason a check gives when it is down', () => {
  it('says "not connected (reconnecting)" for a Redis client between connections, not ioredis\'s own wording', async () => {
    const { results, down } = await runChecksWithVerdict(
      [
        { name: 'redis', run: () => Promise.reject(new Error("Stream isn't writeable and enableOfflineQueue options is false")) },
        { name: 'other', run: () => Promise.reject(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' })) },
      ],
      1000,
    );
    assert.equal(down, true);
    assert.equal(results.redis.status, 'down');
    assert.equal(results.redis.error, 'not connected (reconnecting)');
    assert.equal(results.other.error, 'ECONNREFUSED');
  });
});
