import type Koa from 'koa';
import type { AppName, Config } from '../config';
import type { Db } from '../infra/db';
import type { Kv } from '../infra/kv';
import type { Logger } from '../infra/logger';
import type { TaskQueue } from '../infra/queue';

/** The caller's session, set by the auth app. */
export interface Session {
  accountId: string;
  userName: string;
  /** SHA-256 of the session token, hex: the key under which it is stored. */
  tokenHash: string;
}

/** Everything a request carries between middleware (`ctx.state`). */
export interface State {
  requestId: string;
  log: Logger;
  /** Set by the auth app; absent when auth is off. */
  session?: Session;
  /** The matched operation (set by routing, before any app middleware). */
  operationId?: string;
  /** Its decoded path parameters. */
  params?: Record<string, string>;
  /** The parsed JSON request body (undefined when there was none). */
  body?: unknown;
  /** Why no operation matched, when none did. */
  routeError?: 'not-found' | 'method-not-allowed';
}

export type ApiContext = Koa.ParameterizedContext<State>;
export type ApiMiddleware = Koa.Middleware<State>;

/** The validated parts of a request. */
export interface ApiRequest {
  params: Record<string, string>;
  query: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** An operation handler: validated input in, `ctx.status`/`ctx.body` out. */
export type Handler = (ctx: ApiContext, req: ApiRequest) => Promise<void>;

/**
 * Middleware stages, run in this order before the operation handler:
 * throttling sees every request, auth runs before routing (401 for any
 * non-public path), caching runs once the caller is known.
 */
export const STAGES = ['throttle', 'authenticate', 'cache'] as const;
export type Stage = (typeof STAGES)[number];

/** The infrastructure every app may use. */
export interface Infra {
  config: Config;
  log: Logger;
  db: Db;
  kv: Kv;
  /** The search task queue; present when the search app is on. */
  queue?: TaskQueue;
}

/** One app: owns its operations, middleware and start/stop hooks, and names what it needs. */
export interface App {
  name: AppName | 'core' | 'ops';
  requires: AppName[];
  middleware: Partial<Record<Stage, ApiMiddleware>>;
  handlers: Record<string, Handler>;
  /** Paths (exact) that need no session; only meaningful for the auth app's check. */
  publicPaths?: string[];
  start?: () => Promise<void>;
  stop?: () => Promise<void>;
}

/** Builds an app from the shared infrastructure and the list of enabled apps. */
export type AppFactory = (infra: Infra, enabled: ReadonlySet<AppName>) => App;
