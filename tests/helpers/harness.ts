import http from 'node:http';
import type { AddressInfo } from 'node:net';
import assert from 'node:assert/strict';
import supertest from 'supertest';
import { loadConfig } from '../../messenger/config';
import { createApp, type WebApp } from '../../messenger/http/app';
import { buildInfra, needsBroker, type BuiltInfra } from '../../messenger/infra';
import { migrateLatest } from '../../messenger/infra/db';
import { createLogger } from '../../messenger/infra/logger';
import type { OpenAPIV3 } from 'openapi-types';
import { createBroker, type Broker } from '../../messenger/infra/broker';
import type { Api, Operation } from '../../messenger/http/openapi';
import { OperationRouter } from '../../messenger/http/router';
import { MODE, createTestDatabase, deleteTestKeys, deleteTestQueues, dropTestDatabase, testEnv } from './env';

// Statuses any operation may answer beyond its own list (see swagger.yml's description).
const GENERIC_STATUSES = new Set([405, 413, 415, 429, 500, 503]);

/**
 * Fails the test when a response is not what swagger.yml says: an undocumented
 * status, or a body that does not match the documented schema. Every request
 * made through `Client` is checked, so the document cannot drift from the code.
 */
export function conformsToSpec(api: Api, method: string, path: string, res: supertest.Response): void {
  // The production router decides which operation's schema applies.
  const match = routerOf(api).match(method.toUpperCase(), path.split('?')[0]);
  const op = typeof match === 'string' ? undefined : api.getOperation(match.operationId);
  if (res.status >= 400) {
    const body = res.body as unknown;
    assert.ok(typeof body === 'object' && body !== null, `error body must be JSON, got ${res.text}`);
    // Only an operation that documents a richer error body (the /health report) may add fields; its schema is checked below.
    if (!documentsOwnErrorBody(op, res.status)) {
      const keys = Object.keys(body);
      const detail = (body as { detail?: unknown }).detail;
      assert.ok(
        keys[0] === 'message' && (keys.length === 1 || (keys.length === 2 && keys[1] === 'detail' && typeof detail === 'string')),
        `error body must be {"message"} or {"message", "detail"}, got ${res.text}`,
      );
    }
    assert.ok(errorCodes(api).has((body as { message: string }).message), `unknown error code in ${res.text}`);
  }
  if (op === undefined) {
    assert.ok([401, 404, 405, 429].includes(res.status), `unrouted ${method} ${path} answered ${res.status}`);
    return;
  }
  const responses = op.responses ?? {};
  const documented = String(res.status) in responses;
  // An operation whose app is switched off answers 404 not-found, like an unknown path.
  const switchedOff = res.status === 404 && (res.body as { message?: unknown }).message === 'not-found';
  assert.ok(
    documented || switchedOff || GENERIC_STATUSES.has(res.status),
    `${op.operationId} answered ${res.status}, which swagger.yml does not document (body ${res.text})`,
  );
  // A HEAD answer has the GET's status and headers but no body to check; nor has a 204.
  if (documented && method.toLowerCase() !== 'head' && res.status !== 204) {
    const v = api.validateResponse(res.body, op, res.status);
    assert.ok(v.valid, `${op.operationId} ${res.status} body does not match swagger.yml: ${JSON.stringify(v.errors)} body=${res.text}`);
  }
}

const routers = new WeakMap<Api, OperationRouter>();
function routerOf(api: Api): OperationRouter {
  let r = routers.get(api);
  if (r === undefined) {
    r = new OperationRouter(api);
    routers.set(api, r);
  }
  return r;
}

function documentsOwnErrorBody(op: Operation | undefined, status: number): boolean {
  const response = op?.responses?.[String(status)] as OpenAPIV3.ResponseObject | undefined;
  const schema = response?.content?.['application/json']?.schema as OpenAPIV3.SchemaObject | undefined;
  return Object.keys(schema?.properties ?? {}).some((k) => k !== 'message');
}

function errorCodes(api: Api): Set<string> {
  const schemas = (api.definition.components?.schemas ?? {}) as Record<string, { properties?: Record<string, { enum?: string[] }> }>;
  return new Set(schemas.Error?.properties?.message?.enum ?? []);
}

type Body = string | object | undefined;

/** A supertest client for one running app; every response is checked against swagger.yml. */
export class Client {
  constructor(
    readonly server: http.Server,
    readonly api: Api,
  ) {}

  private check(method: string, path: string, test: supertest.Test): supertest.Test {
    return test.expect((res) => conformsToSpec(this.api, method, path, res));
  }

  get(path: string, session?: string): supertest.Test {
    const t = supertest(this.server).get(path);
    if (session !== undefined) t.set('Authorization', `session_id ${session}`);
    return this.check('get', path, t);
  }

  post(path: string, body?: Body, session?: string): supertest.Test {
    const t = supertest(this.server).post(path);
    if (session !== undefined) t.set('Authorization', `session_id ${session}`);
    if (typeof body === 'string') t.set('Content-Type', 'application/json').send(body);
    else if (body !== undefined) t.send(body);
    return this.check('post', path, t);
  }

  request(method: string, path: string, session?: string): supertest.Test {
    const t = supertest(this.server)[method.toLowerCase() as 'get'](path);
    if (session !== undefined) t.set('Authorization', `session_id ${session}`);
    return this.check(method.toLowerCase(), path, t);
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }
}

export interface Running {
  web: WebApp;
  client: Client;
  close(): Promise<void>;
}

/**
 * Starts a web app over existing infrastructure with extra settings, on a
 * free port. `wrapBroker` lets a test put a broker that fails on purpose in
 * front of the real one (closed with the app either way).
 */
export async function startApp(infra: BuiltInfra, overrides: Record<string, string> = {}, wrapBroker?: (b: Broker) => Broker): Promise<Running> {
  const config = loadConfig(testEnv(overrides));
  // Each app gets its own broker client, as each process would; apps share the stores.
  const broker = needsBroker(config) ? await createBroker(config, infra.log) : undefined;
  const web = await createApp({ ...infra, config, broker: broker !== undefined && wrapBroker !== undefined ? wrapBroker(broker) : broker });
  await web.start();
  const server = http.createServer(web.koa.callback());
  server.on('upgrade', (req, socket, head) => web.upgrade(req, socket, head));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    web,
    client: new Client(server, web.api),
    async close() {
      await web.stop();
      await broker?.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Builds infrastructure (its own database and key prefix in services mode) with extra settings. */
export async function startInfra(overrides: Record<string, string> = {}): Promise<BuiltInfra> {
  const config = loadConfig(testEnv(overrides));
  const infra = await buildInfra(config, createLogger(config.logLevel));
  if (MODE === 'services') await migrateLatest(infra.db);
  return infra;
}

interface Shared {
  infra: BuiltInfra;
  app: Running;
}

let shared: Shared | undefined;

/** The suite-wide infrastructure and default app (all apps on), built once per run. */
export function harness(): Shared {
  if (shared === undefined) throw new Error('harness not started: run mocha with tests/helpers/hooks.ts');
  return shared;
}

/** Root hook: one database per run, created before the first test and dropped after the last. */
export async function startHarness(): Promise<void> {
  if (MODE === 'services') await createTestDatabase();
  const infra = await startInfra();
  const app = await startApp(infra);
  shared = { infra, app };
}

/** Root hook: closes the shared app and infrastructure, drops the run's database, queues and Redis keys. */
export async function stopHarness(): Promise<void> {
  if (shared === undefined) return;
  await shared.app.close();
  await shared.infra.shutdown.run();
  shared = undefined;
  if (MODE === 'services') {
    await dropTestDatabase();
    await deleteTestQueues();
    await deleteTestKeys();
  }
}
