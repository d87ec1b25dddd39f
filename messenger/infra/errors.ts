/**
 * Errors raised by infrastructure adapters. They say which backing service
 * failed, nothing about HTTP: the HTTP edge (errors.ts) maps them to 503.
 */

export type Backend = 'postgresql' | 'redis' | 'rabbitmq';

/** A backing service (PostgreSQL, Redis, RabbitMQ) did not answer or refused the work. */
export class BackendUnavailable extends Error {
  constructor(
    public readonly backend: Backend,
    public readonly reason: string,
  ) {
    super(`${backend} unavailable: ${reason}`);
    this.name = 'BackendUnavailable';
  }
}

/**
 * Why a backing service failed, in the service's words for an operator's
 * log or `/health`: the errno (`ECONNREFUSED`) when there is one, since a
 * driver's message can carry the URL with its password; the backend when the
 * error tells; ioredis's own wording between connections ("Stream isn't
 * writeable and enableOfflineQueue options is false") as what it means.
 */
export function describeFailure(err: unknown): { backend?: Backend; reason: string } {
  if (!(err instanceof Error)) return { reason: 'failed' };
  if (err instanceof BackendUnavailable) return { backend: err.backend, reason: describeFailure(new Error(err.reason)).reason };
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return { reason: code };
  if (/Stream isn't writeable|Connection is closed/i.test(err.message)) return { backend: 'redis', reason: 'not connected (reconnecting)' };
  if (err.name === 'MaxRetriesPerRequestError' || /Reached the max retries per request limit/i.test(err.message)) {
    return { backend: 'redis', reason: 'connection lost during the command' };
  }
  if (err.name === 'KnexTimeoutError') return { backend: 'postgresql', reason: 'no database connection free within DB_TIMEOUT_MS' };
  const reason = err.message.replace(/\w+:\/\/\S+/g, '<url>').slice(0, 120);
  // PostgreSQL's SQLSTATE classes of a connection that cannot be made or was cut.
  if (typeof code === 'string' && /^(08|57P|53|28|3D000)/.test(code)) return { backend: 'postgresql', reason };
  return { reason };
}

/**
 * The process cannot start as set up: a setting that cannot work (APPS naming
 * an app without one it needs) or a resource another process holds (an
 * embedded DATA_DIR in use). Entrypoints exit with code 2 on it, as on a bad
 * setting, rather than 1 (a crash a supervisor would retry for ever).
 */
export class CannotStart extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CannotStart';
  }
}
