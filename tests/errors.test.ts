import assert from 'node:assert/strict';
import http from 'node:http';
import { Writable } from 'node:stream';
import pino from 'pino';
import supertest from 'supertest';
import { createApp } from '../messenger/http/app';
import { loadConfig } from '../messenger/config';
import { AppError, toWireError } from '../messenger/errors';
import type { Kv } from '../messenger/infra/kv';
import { REDACT_PATHS } from '../messenger/infra/logger';
import { testEnv } from './helpers/env';
import { harness } from './helpers/harness';

function withCode(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

describe('the error mapping', () => {
  const cases: [string, unknown, number, string][] = [
    ['an AppError', new AppError(404, 'chat-not-found'), 404, 'chat-not-found'],
    ['a refused connection', withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'), 503, 'service-unavailable'],
    ['a pool timeout', Object.assign(new Error('Knex: Timeout acquiring a connection'), { name: 'KnexTimeoutError' }), 503, 'service-unavailable'],
    ['PostgreSQL shutting down (57P01)', withCode('terminating connection due to administrator command', '57P01'), 503, 'service-unavailable'],
    ['a Redis connection that is closed', new Error('Connection is closed.'), 503, 'service-unavailable'],
    ['an untranslatable character (22P05)', withCode('unsupported Unicode escape sequence', '22P05'), 400, 'bad-parameters'],
    ['a body parser 413', Object.assign(new Error('request entity too large'), { status: 413 }), 413, 'payload-too-large'],
    ['a body parser 400', Object.assign(new Error('Unexpected token'), { status: 400 }), 400, 'bad-parameters'],
    ['a programming error', new TypeError('x is undefined'), 500, 'internal-error'],
    ['a thrown string', 'boom', 500, 'internal-error'],
  ];
  for (const [what, err, status, code] of cases) {
    it(`maps ${what} to ${status} ${code}`, () => {
      const wire = toWireError(err);
      assert.equal(wire.status, status);
      assert.equal(wire.code, code);
      assert.equal(wire.unexpected, status === 500);
    });
  }
});

describe('an unexpected failure', () => {
  it('answers 500 internal-error without details and logs the error with the request id, redacting the session', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString().split('\n').filter(Boolean));
        done();
      },
    });
    const log = pino({ level: 'info', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, sink);
    const { infra } = harness();
    // A store that fails in a way no mapping knows: the request must still get a clean 500.
    const broken = Object.assign(Object.create(infra.kv) as Kv, {
      get: async () => {
        throw new TypeError('secret internal detail');
      },
    });
    const web = await createApp({ ...infra, kv: broken, log, config: loadConfig(testEnv()) });
    const server = http.createServer(web.koa.callback());
    try {
      const token = 'ab'.repeat(16);
      const res = await supertest(server)
        .post('/v1/chats')
        .set('Authorization', `session_id ${token}`)
        .set('X-Request-Id', 'req-test-500')
        .send({ chat_name: 'x' })
        .expect(500, { message: 'internal-error' });
      assert.equal(res.headers['x-request-id'], 'req-test-500');
      assert.ok(!res.text.includes('secret internal detail'));
      const errorLine = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'unexpected error');
      assert.ok(errorLine, `no error logged: ${lines.join('\n')}`);
      assert.equal(errorLine.requestId, 'req-test-500');
      assert.match(JSON.stringify(errorLine.err), /secret internal detail/);
      assert.ok(!lines.some((l) => l.includes(token)), 'the session id was logged');
    } finally {
      server.close();
    }
  });
});
