/**
 * Types shared by infrastructure, the HTTP edge, apps and services: the
 * request state, the caller's session, the dependencies every app receives,
 * the app shape, and handler input typed from swagger.yml (generated into
 * `generated/openapi.ts` by `npm run gen:types`).
 */
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import type Koa from 'koa';
import type { Config } from './config';
import type { AppError } from './errors';
import type { EventBus, EventName, Reactor } from './events';
import type { Db } from './infra/db';
import type { Kv } from './infra/kv';
import type { Logger } from './infra/logger';
import type { Broker } from './infra/broker';
import type { Presence } from './infra/presence';
import type { operations } from './generated/openapi';

/** The caller's session, set by the auth app. */
export interface Session {
  accountId: string;
  userName: string;
  /** SHA-256 of the session token, hex: the key under which it is stored. */
  tokenHash: string;
  /** When the session expires (epoch ms); open WebSocket connections close then. */
  expiresAt?: number;
}

/** Everything a request carries between middleware (`ctx.state`). */
export interface State {
  requestId: string;
  /** When the request reached the app (epoch ms): the receive deadline counts from here. */
  startedAt: number;
  log: Logger;
  /** Set by the auth app; absent when auth is off. */
  session?: Session;
  /** The matched operation (set by routing, before any app middleware). */
  operationId?: OperationId;
  /** Its decoded path parameters. */
  params?: Record<string, string>;
  /** The query parameters the operation declares (others are ignored, never seen by a handler or a cache key). */
  query?: Record<string, string | string[] | undefined>;
  /** The parsed JSON request body (undefined when there was none). */
  body?: unknown;
  /** The body's top-level number tokens as written (for numbers sent where text is expected). */
  rawNumbers?: Map<string, string>;
  /**
   * Set by routing for operations swagger.yml marks `x-cache-chat`: the chat
   * (wire id) whose stored messages make this response stale.
   */
  cacheChat?: string;
  /** Why no operation matched, when none did. */
  routeError?: 'not-found' | 'method-not-allowed';
  /**
   * True on a path of an operation swagger.yml marks `security: []` (set by
   * routing): no session is checked there, so an Authorization header names
   * no session and the request counts as one without.
   */
  publicPath?: boolean;
}

export type ApiContext = Koa.ParameterizedContext<State>;
export type ApiMiddleware = Koa.Middleware<State>;

/** Every operationId of swagger.yml. */
export type OperationId = keyof operations;

type Parameters<Op extends OperationId> = operations[Op]['parameters'];
type PathOf<Op extends OperationId> = Parameters<Op> extends { path: infer P } ? { [K in keyof P]: string } : Record<string, never>;
type QueryOf<Op extends OperationId> = Parameters<Op> extends { query?: infer Q }
  ? [Q] extends [never] ? Record<string, never> : { [K in keyof Q]?: string | string[] }
  : Record<string, never>;
type BodyOf<Op extends OperationId> = operations[Op] extends { requestBody: { content: { 'application/json': infer B } } }
  ? B
  : undefined;

/**
 * What a handler of `Op` receives once the request passed swagger.yml's
 * validation: path parameters, the raw query strings it declares, and the
 * body in the shape the document gives it.
 */
export interface OperationInput<Op extends OperationId> {
  params: PathOf<Op>;
  query: QueryOf<Op>;
  body: BodyOf<Op>;
}

/** An operation handler: validated input in, `ctx.status`/`ctx.body` out. */
export type Handler<Op extends OperationId> = (ctx: ApiContext, req: OperationInput<Op>) => Promise<void>;

/** An app's handlers, by operationId. */
export type Handlers = { [Op in OperationId]?: Handler<Op> };

/**
 * Middleware stages, run in this order before the operation handler:
 * throttling sees every request, auth runs before routing (401 for any
 * non-public path), caching runs once the caller is known.
 */
export const STAGES = ['throttle', 'authenticate', 'cache'] as const;
export type Stage = (typeof STAGES)[number];

/**
 * Reactions to domain events, by event name, in the process that published
 * them: each gets the events of one flush (events.ts), in publish order, never
 * empty, and may add follow-up events to that flush.
 */
export type Reactors = { [K in EventName]?: Reactor<K> };

/**
 * What the apps that limit requests (throttling) say about an upgrade
 * request, asked before it is authenticated: `refused` (a 429 to answer
 * instead), the headers to send with any refusal, and `unauthorized`, to be
 * called when the upgrade is refused 401 (a made-up session id or ticket).
 */
export interface UpgradeAdmission {
  refused?: AppError;
  headers: Record<string, string>;
  unauthorized(): Promise<void>;
}

/**
 * Takes over an HTTP upgrade request (a WebSocket) when it is the app's;
 * returns false to leave it to the next app (when none takes it: 401
 * without a valid session, else 404, as an unknown path). `admit`
 * counts the request as every API request is counted (throttling), and must
 * be asked before the upgrade is authenticated.
 */
export type UpgradeHandler = (req: http.IncomingMessage, socket: Duplex, head: Buffer, admit: (req: http.IncomingMessage) => Promise<UpgradeAdmission>) => boolean;

/** The infrastructure every app and service may use. */
export interface Deps {
  config: Config;
  log: Logger;
  db: Db;
  kv: Kv;
  /** Domain events: in memory (embedded mode) or Redis pub/sub (services mode). */
  events: EventBus;
  /** Who has an open real-time connection (Redis marks with a TTL, or memory). */
  presence: Presence;
  /** Named queues; present when an enabled app queues anything. */
  broker?: Broker;
  /**
   * The HTTP API's own body validation (swagger.yml, through openapi-backend)
   * for an operation, for edges other than HTTP that take the same input (a
   * WebSocket `send` is a POST messages): why `body` does not match, or
   * undefined when it does. Set by createApp (web processes).
   */
  checkBody?: (operationId: OperationId, body: unknown) => string | undefined;
}

/** One app: owns its operations, middleware, event reactions and start/stop hooks, and names what it needs. */
export interface App {
  name: string;
  requires: string[];
  middleware: Partial<Record<Stage, ApiMiddleware>>;
  handlers: Handlers;
  /** Domain events it reacts to (registered at start, removed at stop). */
  reactors?: Reactors;
  /** HTTP upgrades (WebSocket) it serves. */
  upgrade?: UpgradeHandler;
  /**
   * Checks an upgrade request's session as its `authenticate` middleware
   * checks an API request's (throws the matching 401); asked for upgrades
   * no app serves, so that those answer 401 without a valid session and
   * 404 with one, as unknown paths do.
   */
  authenticateUpgrade?: (req: http.IncomingMessage) => Promise<Session>;
  /** Counts an upgrade request as its `throttle` middleware counts API requests (see UpgradeAdmission). */
  admitUpgrade?: (req: http.IncomingMessage) => Promise<UpgradeAdmission>;
  /** Closes the connections it took over by `upgrade` (at shutdown, before HTTP drains). */
  closeUpgrades?: () => Promise<void>;
  start?: () => Promise<void>;
  stop?: () => Promise<void>;
}

/** Builds an app from the shared dependencies and the set of enabled app names. */
export type AppFactory = (deps: Deps, enabled: ReadonlySet<string>) => App;

/** An app module: its name (as written in APPS) and its factory. */
export interface AppModule {
  name: string;
  create: AppFactory;
}
