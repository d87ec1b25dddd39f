import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { listen, type DrainableServer } from '../messenger/http/server';
import { harness, startApp, type Running } from './helpers/harness';
import { buildChat, buildUser, joinChat, postMessage } from './helpers/factories';

/** Sends raw bytes on a new connection and resolves with everything the server answered before closing. */
function raw(port: number, chunks: (string | Buffer)[], gapMs = 0, waitMs = 5000): Promise<{ text: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (text += d));
    socket.on('error', () => {});
    socket.on('close', () => resolve({ text, ms: Date.now() - started }));
    const t = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${waitMs} ms; got ${JSON.stringify(text.slice(0, 200))}`));
    }, waitMs);
    socket.on('close', () => clearTimeout(t));
    void (async () => {
      for (const c of chunks) {
        if (socket.destroyed) return;
        socket.write(c);
        if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
      }
    })();
  });
}

function parse(text: string): { status: number; headers: Record<string, string>; body: string } {
  const [head, ...rest] = text.split('\r\n\r\n');
  const [statusLine, ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: rest.join('\r\n\r\n') };
}

describe('HTTP edges', () => {
  let app: Running;
  let server: DrainableServer;
  let port: number;

  before(async () => {
    app = await startApp(harness().infra, { REQUEST_TIMEOUT_MS: '600' });
    // The production listener (parser errors and timeouts are answered by it, not by Koa).
    server = await listen(app.web.koa.callback(), 0, '127.0.0.1', undefined, 600);
    port = (server.server.address() as AddressInfo).port;
  });

  after(async () => {
    await server.drain(Date.now());
    await app.close();
  });

  it('answers 408 request-timeout in the usual shape to a body that trickles in, within REQUEST_TIMEOUT_MS', async () => {
    const head = 'POST /v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n';
    const { text, ms } = await raw(port, [head, '{', '"', 'u', 's', 'e', 'r'], 200, 5000);
    const res = parse(text);
    assert.equal(res.status, 408);
    assert.deepEqual(JSON.parse(res.body), { message: 'request-timeout' });
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.match(res.headers['x-request-id'], /^[\w-]{8,}$/);
    assert.ok(ms < 2000, `closed after ${ms} ms`);
  });

  // Until 2026-12-07 Node's default check every 30 s held such connections up to 30 s past REQUEST_TIMEOUT_MS.
  it('answers 408 and frees the connection within about REQUEST_TIMEOUT_MS when the headers trickle in or never come (slowloris)', async () => {
    const [trickled, silent] = await Promise.all([
      raw(port, 'GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: '.split('').concat(Array<string>(60).fill('a')), 100, 5000),
      raw(port, [], 0, 5000),
    ]);
    for (const { text, ms } of [trickled, silent]) {
      const res = parse(text);
      assert.equal(res.status, 408, text);
      assert.deepEqual(JSON.parse(res.body), { message: 'request-timeout' });
      assert.ok(ms < 2500, `closed after ${ms} ms (REQUEST_TIMEOUT_MS 600)`);
    }
  });

  it('answers 408 to a promised body that never comes', async () => {
    const head = 'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n';
    const res = parse((await raw(port, [head], 0, 5000)).text);
    assert.equal(res.status, 408);
    assert.deepEqual(JSON.parse(res.body), { message: 'request-timeout' });
  });

  it('answers 431 headers-too-large in the usual shape to huge headers and to a 64 KiB URL', async () => {
    for (const request of [
      `GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      `GET /${'a'.repeat(64 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    ]) {
      const res = parse((await raw(port, [request])).text);
      assert.equal(res.status, 431);
      assert.deepEqual(JSON.parse(res.body), { message: 'headers-too-large' });
      assert.equal(res.headers['x-content-type-options'], 'nosniff');
      assert.match(res.headers['x-request-id'], /^[\w-]{8,}$/);
    }
  });

  it('answers 400 bad-parameters in the usual shape to malformed framing', async () => {
    const res = parse((await raw(port, ['GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n'])).text);
    assert.equal(res.status, 400);
    assert.deepEqual(JSON.parse(res.body), { message: 'bad-parameters' });
    assert.match(res.headers['content-type'], /^application\/json/);
  });

  // Until 2026-12-07 the header was ignored: a gzip body was a 400 (raw bytes parsed as JSON)
  // and a plain body labelled gzip was stored as sent.
  it('a body with a Content-Encoding other than identity is 415 unsupported-media-type with Accept-Encoding: identity, and nothing is stored', async () => {
    const { client } = harness().app;
    const name = `enc${Date.now()}`;
    const json = JSON.stringify({ user_name: name, password: 'secret1' });
    for (const [encoding, body] of [
      ['gzip', zlib.gzipSync(json)],
      ['gzip', Buffer.from(json)],
      ['br', zlib.brotliCompressSync(json)],
      ['deflate, identity', zlib.deflateSync(json)],
      ['x-unknown', Buffer.from(json)],
    ] as [string, Buffer][]) {
      const head = `POST /v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: ${encoding}\r\nContent-Length: ${body.length}\r\n\r\n`;
      const res = parse((await raw(port, [Buffer.concat([Buffer.from(head), body])])).text);
      assert.equal(res.status, 415, `${encoding}: ${res.body}`);
      assert.deepEqual(JSON.parse(res.body), { message: 'unsupported-media-type' });
      assert.equal(res.headers['accept-encoding'], 'identity');
      assert.match(res.headers['content-type'], /^application\/json/);
    }
    await client.post('/v1/auth/login', { user_name: name, password: 'secret1' }).expect(400, { message: 'user-not-found' });
    // identity is no encoding; an operation without a body ignores the header, as it ignores a body.
    const plain = `POST /v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Encoding: Identity\r\nContent-Length: ${json.length}\r\nConnection: close\r\n\r\n${json}`;
    assert.equal(parse((await raw(port, [plain])).text).status, 201);
    assert.equal(parse((await raw(port, ['GET /ping HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n'])).text).status, 200);
  });

  // Until 2026-12-07 Node answered it itself: an empty chunked 400, no JSON, no X-Request-Id.
  it('an HTTP/1.1 request without Host is 400 bad-parameters in the usual shape; HTTP/1.0 needs none', async () => {
    const res = parse((await raw(port, ['GET /ping HTTP/1.1\r\n\r\n'])).text);
    assert.equal(res.status, 400);
    assert.deepEqual(JSON.parse(res.body), { message: 'bad-parameters' });
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.match(res.headers['x-request-id'], /^[\w-]{8,}$/);
    const old = parse((await raw(port, ['GET /ping HTTP/1.0\r\n\r\n'])).text);
    assert.deepEqual([old.status, JSON.parse(old.body)], [200, {}]);
  });

  // Until 2026-12-07 Node dropped every header after the 2000th, so the second Authorization went unseen.
  it('a second Authorization header after 2000 other headers is still seen: 401 auth-failed', async () => {
    const u = await buildUser(harness().app.client);
    const junk = Array.from({ length: 2000 }, (_, i) => `x${i.toString(36)}: 1\r\n`).join('');
    const request = (extra: string) =>
      `GET /v1/auth/me HTTP/1.1\r\nHost: x\r\nAuthorization: session_id ${u.session}\r\n${junk}${extra}Connection: close\r\n\r\n`;
    const res = parse((await raw(port, [request(`Authorization: session_id ${'0'.repeat(32)}\r\n`)])).text);
    assert.deepEqual([res.status, JSON.parse(res.body)], [401, { message: 'auth-failed' }]);
    // The same request with one Authorization is served.
    assert.equal(parse((await raw(port, [request('')])).text).status, 200);
  });

  // Until 2026-12-07 Node closed the connection without a word.
  it('CONNECT is 405 method-not-allowed in the usual shape', async () => {
    const res = parse((await raw(port, ['CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n'])).text);
    assert.equal(res.status, 405);
    assert.deepEqual(JSON.parse(res.body), { message: 'method-not-allowed' });
    assert.match(res.headers['content-type'], /^application\/json/);
  });

  it('a 405 names the allowed methods in Allow', async () => {
    const res = await harness().app.client.request('DELETE', '/ping').expect(405, { message: 'method-not-allowed' });
    assert.deepEqual(res.headers.allow.split(', ').sort(), ['GET', 'HEAD']);
    const u = await buildUser(harness().app.client);
    const chat = await buildChat(harness().app.client, u.session);
    const put = await harness().app.client.request('PUT', `/v1/chats/${chat}/messages`, u.session).expect(405);
    assert.deepEqual(put.headers.allow.split(', ').sort(), ['GET', 'HEAD', 'POST']);
  });

  it('HEAD works on every GET operation, with the GET status and no body', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chat = await buildChat(client, u.session);
    const paths = ['/ping', '/ping_db', '/health', '/metrics', '/swagger.yml', '/docs', '/docs/index.css', `/v1/chats/${chat}/messages?limit=5`];
    for (const p of paths) {
      const get = await client.get(p, u.session);
      const head = await client.request('HEAD', p, u.session);
      assert.equal(head.status, get.status, `HEAD ${p}`);
      assert.equal(head.text ?? '', '', `HEAD ${p} has no body`);
    }
  });

  it('GET /docs/<unknown file> is 404 not-found with a session and 401 without', async () => {
    const u = await buildUser(harness().app.client);
    await harness().app.client.get('/docs/package.json', u.session).expect(404, { message: 'not-found' });
    await harness().app.client.get('/docs/package.json').expect(401, { message: 'auth-failed' });
  });

  // Browsers ask for /favicon.ico by themselves; it was a 401 (an error in
  // the console) until 2026-12-07.
  it('GET /favicon.ico is 204 without a session, cached for a day; other methods are 405', async () => {
    const { client } = harness().app;
    for (const method of ['GET', 'HEAD']) {
      const res = await client.request(method, '/favicon.ico');
      assert.equal(res.status, 204, method);
      assert.equal(res.headers['cache-control'], 'public, max-age=86400', method);
      assert.equal(res.text ?? '', '', method);
    }
    await client.request('DELETE', '/favicon.ico').expect(405, { message: 'method-not-allowed' });
  });

  it('ignores unknown query parameters such as cache busters', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chat = await buildChat(client, u.session);
    const me = await joinChat(client, chat, u.session);
    const id = await postMessage(client, chat, me, 'hi', u.session);
    const res = await client.get(`/v1/chats/${chat}/messages?limit=10&_=1700000000`, u.session).expect(200);
    assert.deepEqual((res.body as { messages: { message_id: string }[] }).messages.map((m) => m.message_id), [id]);
  });

  it('error bodies say which field broke which rule in detail, and nothing else', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chat = await buildChat(client, u.session);
    await client.get(`/v1/chats/${chat}/messages?limit=0`, u.session)
      .expect(400, { message: 'bad-parameters', detail: 'limit: an integer from 1 to 1000' });
    await client.get(`/v1/chats/${chat}/messages`, u.session).expect(400, { message: 'bad-parameters', detail: 'limit: required' });
    await client.post('/v1/chats', {}, u.session).expect(400, { message: 'bad-parameters', detail: 'chat_name: required' });
    await client.post('/v1/chats', { chat_name: 'x'.repeat(256) }, u.session)
      .expect(400, {
        message: 'bad-parameters',
        detail: 'chat_name: a name of 1 to 255 characters, without leading or trailing spaces, control or invisible characters',
      });
    await client.post('/v1/chats', '[1]', u.session).expect(400, { message: 'bad-parameters', detail: 'body: a JSON object' });
  });

  // Validation coerces these spellings to an integer and lets them through;
  // the handler refused them without a detail until 2026-12-07.
  it('a limit spelled other than plain digits (1e2, 1.0, +5, 0x10) is 400 with the same detail on every paged GET', async () => {
    const { client } = harness().app;
    const u = await buildUser(client);
    const chat = await buildChat(client, u.session);
    const task = '0'.repeat(31) + '1';
    const paged: [string, number][] = [
      [`/v1/chats/${chat}/messages?limit=`, 1000],
      ['/v1/chats?limit=', 1000],
      ['/v1/users?prefix=abc&limit=', 50],
      [`/v1/chats/search/${task}/messages?limit=`, 1000],
    ];
    for (const [path, max] of paged) {
      for (const spelling of ['1e2', '1E1', '1.0', '%2B5', '0x10', '%205']) {
        const res = await client.get(`${path}${spelling}`, u.session);
        assert.deepEqual([res.status, res.body], [400, { message: 'bad-parameters', detail: `limit: an integer from 1 to ${max}` }], `${path}${spelling}`);
      }
      // Plain digits, also with a leading zero, are still taken.
      assert.equal((await client.get(`${path}05`, u.session)).status === 400, false, `${path}05`);
    }
  });
});

describe('the drain of the listener (SIGTERM)', () => {
  it('a request in flight when the drain starts is answered with Connection: close, and its connection then ends', async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let arrived!: () => void;
    const inHandler = new Promise<void>((resolve) => (arrived = resolve));
    const server = await listen(
      (_req, res) => {
        arrived();
        void released.then(() => {
          res.setHeader('Content-Type', 'application/json');
          res.end('{}');
        });
      },
      0,
      '127.0.0.1',
    );
    const port = (server.server.address() as AddressInfo).port;
    const answer = raw(port, ['GET /ping HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n']);
    await inHandler;
    const drained = server.drain(Date.now() + 5000);
    release();
    const { text } = await answer;
    await drained;
    const res = parse(text);
    assert.equal(res.status, 200);
    assert.equal(res.headers.connection, 'close', `told ${res.headers.connection}: the client would reuse a connection being closed`);
    assert.equal(res.body, '{}');
  });
});
