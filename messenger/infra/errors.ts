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
