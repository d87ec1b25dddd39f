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
