/**
 * Every error the API can answer, and the one mapping from anything thrown to
 * a wire status and code. Handlers throw AppErrors; infrastructure failures
 * (PostgreSQL, Redis, RabbitMQ, body parsing) are recognised in `toWireError`.
 */
import { BackendUnavailable } from './infra/errors';

export type ErrorCode =
  | 'bad-parameters'
  | 'bad-cursor'
  | 'user-already-exists'
  | 'user-not-found'
  | 'bad-password'
  | 'auth-failed'
  | 'invalid-session-id'
  | 'session-id-expired'
  | 'invalid-refresh-token'
  | 'chat-not-found'
  | 'task-not-found'
  | 'task-not-complete'
  | 'task-failed'
  | 'not-found'
  | 'method-not-allowed'
  | 'payload-too-large'
  | 'request-limit-exceeded'
  | 'too-many-login-attempts'
  | 'too-many-searches'
  | 'origin-not-allowed'
  | 'service-unavailable'
  | 'request-timeout'
  | 'headers-too-large'
  | 'unsupported-media-type'
  | 'internal-error';

/** An error with a stable wire code; `status` is the HTTP status it maps to. */
export class AppError extends Error {
  constructor(
    public readonly status: number,
    public readonly code: ErrorCode,
    /** Seconds the client should wait before retrying (sent as Retry-After). */
    public readonly retryAfter?: number,
    /** What was wrong, for the client (`detail`): a field and its rule, never internals. */
    public readonly detail?: string,
  ) {
    super(code);
    this.name = new.target.name;
  }
}

/** 400: the request is wrong in a way the client can fix. */
export class BadRequest extends AppError {
  constructor(code: ErrorCode = 'bad-parameters', detail?: string) {
    super(400, code, undefined, detail);
  }
}

/** 401: no usable session. */
export class Unauthorized extends AppError {
  constructor(code: 'auth-failed' | 'invalid-session-id' | 'session-id-expired' | 'invalid-refresh-token') {
    super(401, code);
  }
}

/** 404: the thing does not exist, or the caller may not know it does. */
export class NotFound extends AppError {
  constructor(code: 'chat-not-found' | 'user-not-found' | 'task-not-found' | 'not-found' = 'not-found') {
    super(404, code);
  }
}

/** 429: slow down; carries Retry-After. */
export class TooManyRequests extends AppError {
  constructor(code: 'request-limit-exceeded' | 'too-many-login-attempts' | 'too-many-searches', retryAfter: number) {
    super(429, code, Math.max(1, Math.ceil(retryAfter)));
  }
}

/** 503: a backing service (PostgreSQL, Redis, RabbitMQ) is not answering, or the instance is full (`retryAfter`). */
export class ServiceUnavailable extends AppError {
  constructor(retryAfter?: number) {
    super(503, 'service-unavailable', retryAfter);
  }
}

export interface WireError {
  status: number;
  code: ErrorCode;
  retryAfter?: number;
  /** What was wrong, when the code alone does not say (a field and its rule). */
  detail?: string;
  /** True when the failure is ours, not the client's, and must be logged in full. */
  unexpected: boolean;
}

// Connection-level failures of pg, ioredis, amqplib and the pool: the service
// behind is down or unreachable, which is a 503, never a 500.
const UNAVAILABLE_ERRNO = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
]);
const UNAVAILABLE_MESSAGES = [
  /Connection terminated/i,
  /Connection is closed/i,
  /Stream isn't writeable/i,
  /connect ECONNREFUSED/i,
  /Client has encountered a connection error/i,
  /the database system is (starting up|shutting down|in recovery mode)/i,
  /terminating connection/i,
  /Channel closed/i,
  /Connection closed/i,
  /Reached the max retries per request limit/i,
  /PGlite is closed/i,
];

function field(err: object, name: string): unknown {
  return (err as Record<string, unknown>)[name];
}

/** True when `err` says a backing service could not be reached or dropped us. */
export function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err instanceof ServiceUnavailable || err instanceof BackendUnavailable) return true;
  if (err.name === 'KnexTimeoutError' || err.name === 'MaxRetriesPerRequestError') return true;
  const code = field(err, 'code');
  if (typeof code === 'string') {
    if (UNAVAILABLE_ERRNO.has(code)) return true;
    // PostgreSQL classes 08 (connection), 57P (operator intervention), 53 (resources).
    if (/^(08|57P|53)/.test(code)) return true;
    // 57014 is statement_timeout / query_canceled: the database is too slow to answer.
    if (code === '57014') return true;
    // Class 28 (our user or password refused) and 3D000 (no such database): a
    // connection that cannot be made as set up, not a fault of the request.
    if (code.startsWith('28') || code === '3D000') return true;
  }
  if (UNAVAILABLE_MESSAGES.some((re) => re.test(err.message))) return true;
  const cause = field(err, 'cause');
  return cause !== err && cause instanceof Error && isUnavailable(cause);
}

/** Maps anything thrown while serving a request to its wire status and code. */
export function toWireError(err: unknown): WireError {
  if (err instanceof AppError) {
    return { status: err.status, code: err.code, retryAfter: err.retryAfter, detail: err.detail, unexpected: false };
  }
  if (err instanceof Error) {
    const status = field(err, 'status') ?? field(err, 'statusCode');
    // Errors from the body parser (raw-body/co-body) carry an HTTP status.
    if (status === 413) return { status: 413, code: 'payload-too-large', unexpected: false };
    if (status === 400 || status === 415 || status === 422) {
      return { status: 400, code: 'bad-parameters', unexpected: false };
    }
    const code = field(err, 'code');
    // Text PostgreSQL cannot store as sent (invalid encoding, NUL, out-of-range
    // values) is the client's problem, not ours.
    if (code === '22021' || code === '22P05' || code === '22P02' || code === '22003' || code === '54000') {
      return { status: 400, code: 'bad-parameters', unexpected: false };
    }
    if (isUnavailable(err)) return { status: 503, code: 'service-unavailable', unexpected: false };
  }
  return { status: 500, code: 'internal-error', unexpected: true };
}

/** The JSON body of an error answer: the code, and what was wrong when known. */
export function errorBody(wire: Pick<WireError, 'code' | 'detail'>): { message: ErrorCode; detail?: string } {
  return wire.detail === undefined ? { message: wire.code } : { message: wire.code, detail: wire.detail };
}
