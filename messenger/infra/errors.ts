/**
 * Errors raised by infrastructure adapters. They say which backing service
 * failed, nothing about HTTP: the HTTP edge (errors.ts) maps them to 503.
 */

/** A backing service (PostgreSQL, Redis, RabbitMQ) did not answer or refused the work. */
export class BackendUnavailable extends Error {
  constructor(
    public readonly backend: 'postgresql' | 'redis' | 'rabbitmq',
    reason: string,
  ) {
    super(`${backend} unavailable: ${reason}`);
    this.name = 'BackendUnavailable';
  }
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
