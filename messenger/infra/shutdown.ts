import { takeEarlySignal } from './early-signals';
import type { Logger } from './logger';

/** Closes one resource; `drainBy` (epoch ms) is when work still in flight must give way. */
type Close = (drainBy: number) => Promise<void>;
type Closer = { name: string; close: Close };

/** Default bound of a shutdown started without one (tests, the migration CLI). */
const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Resources register their own close; `run` closes them in reverse order of
 * registration: HTTP first (registered last), then apps and their consumers,
 * the queue, Redis, and the database last.
 *
 * The whole shutdown is bounded by one number (SHUTDOWN_TIMEOUT_MS). Requests
 * in flight may run until a quarter of it (at most 3 s) is left; that reserve
 * is for closing the queue, Redis and the database cleanly. A force-quit
 * timer ends the process at the bound whatever is still hanging.
 */
export class Shutdown {
  private readonly closers: Closer[] = [];
  private running: Promise<void> | undefined;

  constructor(private readonly log: Logger) {}

  /** Registers a resource to close; later registrations close first. */
  add(name: string, close: Close): void {
    this.closers.push({ name, close });
  }

  /** True once a shutdown has started (new work should be refused or hurried). */
  get started(): boolean {
    return this.running !== undefined;
  }

  /** Closes everything once, in reverse order; later calls wait for the same run. */
  run(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    this.running ??= (async () => {
      const started = Date.now();
      const drainBy = started + timeoutMs - Math.min(3000, Math.floor(timeoutMs / 4));
      for (const c of [...this.closers].reverse()) {
        const t = Date.now();
        try {
          await c.close(drainBy);
          this.log.debug({ resource: c.name, ms: Date.now() - t }, 'closed');
        } catch (err) {
          this.log.warn({ err, resource: c.name }, 'close failed');
        }
      }
      this.log.info({ ms: Date.now() - started }, 'shutdown complete');
    })();
    return this.running;
  }

  /**
   * Runs the shutdown on SIGTERM or SIGINT (once; a second signal of the
   * same kind kills at once), then exits; a timer forces the exit after
   * `timeoutMs`; a signal that came while the entrypoint's modules loaded
   * (infra/early-signals) starts it at once. (A cluster worker whose primary
   * dies is ended by node:cluster itself.)
   */
  onSignals(timeoutMs: number): void {
    const handler = (reason: string) => {
      if (this.started) return;
      this.log.info({ reason, timeoutMs }, 'shutting down');
      const timer = setTimeout(() => {
        this.log.error({ timeoutMs }, 'shutdown timed out, forcing exit');
        process.exit(1);
      }, timeoutMs);
      timer.unref();
      void this.run(timeoutMs).then(() => process.exit(0));
    };
    process.once('SIGTERM', () => handler('SIGTERM'));
    process.once('SIGINT', () => handler('SIGINT'));
    const early = takeEarlySignal();
    if (early !== undefined) handler(early);
  }
}
