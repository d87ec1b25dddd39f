import type { Logger } from './logger';

type Closer = { name: string; close: () => Promise<void> };

/**
 * Resources register their own close; `run` closes them in reverse order of
 * registration (HTTP first, database last), each bounded by the force-quit timer.
 */
export class Shutdown {
  private readonly closers: Closer[] = [];
  private running: Promise<void> | undefined;

  constructor(private readonly log: Logger) {}

  /** Registers a resource to close; later registrations close first. */
  add(name: string, close: () => Promise<void>): void {
    this.closers.push({ name, close });
  }

  /** Closes everything once, in reverse order; later calls wait for the same run. */
  run(): Promise<void> {
    this.running ??= (async () => {
      for (const c of [...this.closers].reverse()) {
        try {
          await c.close();
          this.log.debug({ resource: c.name }, 'closed');
        } catch (err) {
          this.log.warn({ err, resource: c.name }, 'close failed');
        }
      }
    })();
    return this.running;
  }

  /** Runs the shutdown on SIGTERM/SIGINT and exits; a timer forces the exit if it hangs. */
  onSignals(timeoutMs: number): void {
    const handler = (signal: NodeJS.Signals) => {
      this.log.info({ signal }, 'shutting down');
      const timer = setTimeout(() => {
        this.log.error({ timeoutMs }, 'shutdown timed out, forcing exit');
        process.exit(1);
      }, timeoutMs);
      timer.unref();
      void this.run().then(() => process.exit(0));
    };
    process.once('SIGTERM', handler);
    process.once('SIGINT', handler);
  }
}
