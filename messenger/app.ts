import { randomUUID } from 'node:crypto';
import Koa from 'koa';
import type { AppName } from './config';
import { AppError, BadRequest, NotFound, toWireError } from './errors';
import { observeRequest } from './infra/metrics';
import { jsonBody } from './infra/body';
import { createApi, numbersToStrings, OperationRouter, RequestValidator, stringFields, type Api } from './infra/openapi';
import { APP_FACTORIES } from './apps';
import { coreApp } from './apps/core';
import { opsApp } from './apps/ops';
import { webClient, webClientRoot } from './http/web-client';
import { isStorableText } from './apps/input';
import { STAGES, type ApiMiddleware, type App, type Handler, type Infra, type State } from './apps/types';

/** A built web application: the Koa app, its enabled apps and their lifecycle. */
export interface WebApp {
  koa: Koa<State>;
  api: Api;
  apps: App[];
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Raised at start-up when the enabled apps cannot work together. */
export class AppSetupError extends Error {}

/** Builds every enabled app, failing with a named problem when one needs an app that is off. */
export function buildApps(infra: Infra): App[] {
  const enabled = new Set<AppName>(infra.config.apps);
  const problems: string[] = [];
  const apps: App[] = [];
  for (const name of infra.config.apps) {
    const factory = APP_FACTORIES[name];
    if (factory === undefined) {
      problems.push(`app "${name}" is not available in this build`);
      continue;
    }
    const app = factory(infra, enabled);
    for (const need of app.requires) {
      if (!enabled.has(need)) problems.push(`app "${name}" requires app "${need}", which is not in APPS`);
    }
    apps.push(app);
  }
  if (problems.length > 0) throw new AppSetupError(`cannot start: ${problems.join('; ')}`);
  return [coreApp(infra, enabled), opsApp(infra, enabled), ...apps];
}

/** First middleware: every error becomes `{"message": code}`; unexpected ones are logged with the request id. */
function errorHandler(): ApiMiddleware {
  return async function errorHandler(ctx, next) {
    try {
      await next();
    } catch (err) {
      const wire = toWireError(err);
      if (wire.unexpected) ctx.state.log.error({ err }, 'unexpected error');
      else if (wire.status === 503) ctx.state.log.warn({ err: err instanceof Error ? err.message : err }, 'backend unavailable');
      ctx.status = wire.status;
      ctx.body = { message: wire.code };
      if (wire.retryAfter !== undefined) ctx.set('Retry-After', String(wire.retryAfter));
    }
  };
}

const REQUEST_ID = /^[\w.-]{1,64}$/;

/** Request id, per-request child logger, safe headers, one access-log line and the request metrics. */
function requestContext(infra: Infra): ApiMiddleware {
  return async function requestContext(ctx, next) {
    const started = process.hrtime.bigint();
    const incoming = ctx.get('x-request-id');
    const requestId = REQUEST_ID.test(incoming) ? incoming : randomUUID();
    ctx.state.requestId = requestId;
    ctx.state.log = infra.log.child({ requestId });
    ctx.set('X-Request-Id', requestId);
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('Cache-Control', 'no-store');
    let failed: number | undefined;
    try {
      await next();
    } catch (err) {
      // errorHandler answers it further out; log and count the status it will send, not Koa's default 404.
      failed = toWireError(err).status;
      throw err;
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const status = failed ?? ctx.status;
      observeRequest(ctx.state.operationId ?? 'unrouted', status, ms / 1000);
      ctx.state.log.info(
        { method: ctx.method, path: ctx.path, op: ctx.state.operationId, status, ms: Math.round(ms * 100) / 100 },
        'request',
      );
    }
  };
}

/** Builds the Koa app: core middleware, the enabled apps' middleware by stage, then the operation handler. */
export async function createApp(infra: Infra): Promise<WebApp> {
  const apps = buildApps(infra);
  const api = await createApi();
  const router = new OperationRouter(api);
  const validator = new RequestValidator(api);
  const stringsByOp = stringFields(api);

  const handlers = new Map<string, Handler>();
  for (const app of apps) for (const [op, h] of Object.entries(app.handlers)) handlers.set(op, h);

  const koa = new Koa<State>();
  koa.silent = true;
  koa.use(errorHandler());
  koa.use(requestContext(infra));
  // The web client's files (`/`, `/assets/*`): public, before routing and the session check.
  koa.use(webClient({ root: webClientRoot() }));
  // Routing only records where the request goes: a session is checked first,
  // so an unknown path without one is 401, not 404.
  koa.use(async function route(ctx, next) {
    const match = router.match(ctx.method, ctx.path);
    if (typeof match === 'string') ctx.state.routeError = match;
    else {
      ctx.state.operationId = match.operationId;
      ctx.state.params = match.params;
    }
    await next();
  });

  const publicPaths = new Set(apps.flatMap((a) => a.publicPaths ?? []));
  for (const stage of STAGES) {
    for (const app of apps) {
      const mw = app.middleware[stage];
      if (mw === undefined) continue;
      // Public paths skip the session check; everything else, existing or not, needs one.
      koa.use(stage === 'authenticate' ? (ctx, next) => (publicPaths.has(ctx.path) ? next() : mw(ctx, next)) : mw);
    }
  }

  // 404 and 405 are decided before the body is read: a wrong path or method
  // is that, whatever its body holds.
  koa.use(async function resolve(ctx, next) {
    if (ctx.state.routeError === 'method-not-allowed') throw new AppError(405, 'method-not-allowed');
    const operationId = ctx.state.operationId;
    // Unknown path, or an operation whose app is switched off.
    if (operationId === undefined || !handlers.has(operationId)) throw new NotFound('not-found');
    await next();
  });

  koa.use(jsonBody(infra.config.bodyLimitBytes, validator.withBody));

  koa.use(async function dispatch(ctx) {
    const operationId = ctx.state.operationId as string;
    const handler = handlers.get(operationId) as Handler;
    const fields = stringsByOp.get(operationId);
    const body = numbersToStrings(ctx.state.body, fields);
    if (fields !== undefined && body !== null && typeof body === 'object') {
      const obj = body as Record<string, unknown>;
      // Text is stored exactly as sent or refused; never silently altered.
      for (const f of fields) if (typeof obj[f] === 'string' && !isStorableText(obj[f])) throw new BadRequest();
    }
    const params = ctx.state.params ?? {};
    const query = ctx.query as Record<string, string | string[] | undefined>;
    if (!validator.valid(operationId, { params, query, headers: ctx.headers, body })) {
      throw new BadRequest();
    }
    await handler(ctx, { params, query, body });
  });

  return {
    koa,
    api,
    apps,
    async start() {
      for (const app of apps) await app.start?.();
    },
    async stop() {
      for (const app of [...apps].reverse()) await app.stop?.();
    },
  };
}
