import type http from 'node:http';
import type { Duplex } from 'node:stream';
import Koa from 'koa';
import { AppError, BadRequest, NotFound } from '../errors';
import { parseId, toWireId } from '../ids';
import { loadAppModules, mountReactors } from '../apps/registry';
import { isStorableText } from '../apps/input';
import { STAGES, type App, type Deps, type Handler, type OperationId, type OperationInput, type State, type UpgradeAdmission } from '../types';
import { jsonBody } from './body';
import { refuseUpgradeFor } from './upgrade';
import { errorHandler, observeUpgrade, requestContext } from './context';
import { CannotStart } from '../infra/errors';
import { cacheableOperations, createApi, numbersToStrings, publicPathMatcher, RequestValidator, stringFields, type Api } from './openapi';
import { cors } from './cors';
import { OperationRouter } from './router';
import { webClient, webClientRoot } from './web-client';

/** A built web application: the Koa app, its enabled apps and their lifecycle. */
export interface WebApp {
  koa: Koa<State>;
  api: Api;
  router: OperationRouter;
  apps: App[];
  /**
   * Hands an HTTP upgrade (WebSocket) to the app that serves it; anything
   * else is answered as an unknown path is: 401 without a valid session
   * (except on public paths), else 404.
   */
  upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Closes every upgraded connection (WebSockets, close code 1001), so the HTTP drain does not wait on them. */
  closeUpgrades(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Raised at start-up when the enabled apps cannot work together (exit code 2, as a bad setting). */
export class AppSetupError extends CannotStart {}

/** Builds every enabled app, failing with a named problem when one needs an app that is off. */
export function buildApps(deps: Deps): App[] {
  const modules = loadAppModules();
  const enabled = new Set<string>(deps.config.apps);
  const problems: string[] = [];
  const apps: App[] = [];
  for (const name of deps.config.apps) {
    const mod = modules.get(name);
    if (mod === undefined) {
      problems.push(`app "${name}" is not available in this build`);
      continue;
    }
    const app = mod.create(deps, enabled);
    for (const need of app.requires) {
      if (!enabled.has(need)) problems.push(`app "${name}" requires app "${need}", which is not in APPS`);
    }
    apps.push(app);
  }
  if (problems.length > 0) throw new AppSetupError(problems.join('; '));
  const always = ['core', 'ops'].map((name) => (modules.get(name) as NonNullable<ReturnType<typeof modules.get>>).create(deps, enabled));
  return [...always, ...apps];
}

/**
 * Builds the Koa app. One pipeline for every request: error mapping →
 * request context → routing → app middleware by stage (throttle,
 * authenticate, cache) → 404/405 → body → validation against swagger.yml →
 * the operation's handler with typed input.
 */
export async function createApp(webDeps: Deps): Promise<WebApp> {
  const api = await createApi();
  const router = new OperationRouter(api);
  const validator = new RequestValidator(api);
  const deps: Deps = { ...webDeps, checkBody: (operationId, body) => validator.checkBody(operationId, body) };
  const apps = buildApps(deps);
  const stringsByOp = stringFields(api);
  const isPublic = publicPathMatcher(api);
  const cacheable = cacheableOperations(api);

  const handlers = new Map<OperationId, Handler<OperationId>>();
  for (const app of apps) {
    for (const [op, h] of Object.entries(app.handlers)) handlers.set(op as OperationId, h as Handler<OperationId>);
  }

  const koa = new Koa<State>();
  koa.silent = true;
  koa.use(errorHandler());
  koa.use(requestContext(deps.log));
  // The web client's files (`/`, `/assets/*`): public, before routing and the session check.
  koa.use(webClient({ root: webClientRoot() }));
  koa.use(cors(deps.config.corsOrigins));
  // Routing only records where the request goes: a session is checked first,
  // so an unknown path without one is 401, not 404.
  koa.use(async function route(ctx, next) {
    ctx.state.publicPath = isPublic(ctx.path);
    const match = router.match(ctx.method, ctx.path);
    if (typeof match === 'string') ctx.state.routeError = match;
    else {
      ctx.state.operationId = match.operationId;
      ctx.state.params = match.params;
      ctx.state.query = validator.declaredQuery(match.operationId, ctx.query as Record<string, string | string[] | undefined>);
      const chatParam = cacheable.get(match.operationId);
      const chat = chatParam === undefined ? null : parseId(match.params[chatParam]);
      if (chat !== null) ctx.state.cacheChat = toWireId(chat);
    }
    await next();
  });

  for (const stage of STAGES) {
    for (const app of apps) {
      const mw = app.middleware[stage];
      if (mw === undefined) continue;
      // Paths of operations swagger.yml marks `security: []` skip the session check; everything else, existing or not, needs one.
      koa.use(stage === 'authenticate' ? (ctx, next) => (ctx.state.publicPath === true ? next() : mw(ctx, next)) : mw);
    }
  }

  // 404 and 405 are decided before the body is read: a wrong path or method
  // is that, whatever its body holds.
  koa.use(async function resolve(ctx, next) {
    if (ctx.state.routeError === 'method-not-allowed') {
      ctx.set('Allow', router.allowed(ctx.path).join(', '));
      throw new AppError(405, 'method-not-allowed');
    }
    const operationId = ctx.state.operationId;
    // Unknown path, or an operation whose app is switched off.
    if (operationId === undefined || !handlers.has(operationId)) throw new NotFound('not-found');
    await next();
  });

  koa.use(jsonBody(deps.config.bodyLimitBytes, validator.withBody, deps.config.requestTimeoutMs));

  koa.use(async function dispatch(ctx) {
    const operationId = ctx.state.operationId as OperationId;
    const handler = handlers.get(operationId) as Handler<OperationId>;
    const undecodable = validator.undecodableQuery(operationId, ctx.querystring);
    if (undecodable !== undefined) throw new BadRequest('bad-parameters', `${undecodable}: not UTF-8 once percent-decoded`);
    const fields = stringsByOp.get(operationId);
    const body = numbersToStrings(ctx.state.body, fields, ctx.state.rawNumbers);
    if (fields !== undefined && body !== null && typeof body === 'object') {
      const obj = body as Record<string, unknown>;
      // Text is stored exactly as sent or refused; never silently altered.
      for (const f of fields) if (typeof obj[f] === 'string' && !isStorableText(obj[f])) throw new BadRequest();
    }
    const params = ctx.state.params ?? {};
    const query = ctx.state.query ?? {};
    const violation = validator.check(operationId, { params, query, headers: ctx.headers, body });
    // A path that names nothing is not found (SPEC: a malformed id in a path is "not found").
    if (violation?.in === 'path') throw new NotFound('not-found');
    if (violation !== undefined) throw new BadRequest('bad-parameters', violation.detail);
    // The validator has checked every part against swagger.yml: the input has the generated types' shape.
    await handler(ctx, { params, query, body } as unknown as OperationInput<OperationId>);
  });

  // Upgrades never enter Koa: the apps that count requests (throttling) count them here.
  const admitters = apps.flatMap((app) => (app.admitUpgrade === undefined ? [] : [app.admitUpgrade]));
  async function admitUpgrade(req: http.IncomingMessage): Promise<UpgradeAdmission> {
    const said = await Promise.all(admitters.map((admit) => admit(req)));
    return {
      refused: said.find((a) => a.refused !== undefined)?.refused,
      headers: Object.assign({}, ...said.map((a) => a.headers)) as Record<string, string>,
      unauthorized: async () => {
        await Promise.all(said.map((a) => a.unauthorized()));
      },
    };
  }

  /**
   * An upgrade no app serves: a session is checked first (counted by the
   * throttling app before the lookup, as every request is), so an unknown
   * path without one is 401, not 404, as in the Koa pipeline. Public paths
   * need no session and touch no store.
   */
  const authenticators = apps.flatMap((app) => (app.authenticateUpgrade === undefined ? [] : [app.authenticateUpgrade]));
  async function refuseUnserved(req: http.IncomingMessage, socket: Duplex): Promise<void> {
    let admission: UpgradeAdmission | undefined;
    try {
      if (authenticators.length > 0 && !isPublic(new URL(req.url ?? '/', 'http://localhost').pathname)) {
        admission = await admitUpgrade(req);
        if (admission.refused !== undefined) throw admission.refused;
        for (const authenticate of authenticators) await authenticate(req);
      }
      throw new NotFound('not-found');
    } catch (err) {
      await refuseUpgradeFor(socket, err, admission, deps.log);
    }
  }

  let unmount: (() => void) | undefined;
  return {
    koa,
    api,
    router,
    apps,
    upgrade(req, socket, head) {
      observeUpgrade(deps.log, req, socket);
      for (const app of apps) if (app.upgrade?.(req, socket, head, admitUpgrade) === true) return;
      socket.on('error', () => undefined);
      refuseUnserved(req, socket).catch((err: unknown) => {
        deps.log.error({ err }, 'upgrade failed');
        socket.destroy();
      });
    },
    async closeUpgrades() {
      await Promise.all(apps.map((app) => app.closeUpgrades?.()));
    },
    async start() {
      unmount = mountReactors(deps, apps);
      await deps.events.start();
      for (const app of apps) await app.start?.();
    },
    async stop() {
      for (const app of [...apps].reverse()) await app.stop?.();
      unmount?.();
    },
  };
}
