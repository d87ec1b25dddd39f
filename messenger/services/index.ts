/**
 * Process roles. Every long-running process of this build runs one or more
 * named services from this registry, wired the same way: config → infra
 * (buildInfra) → the service's own start → ordered shutdown on SIGTERM.
 * `messenger-api` runs `web` (which runs the workers in-process in the
 * embedded mode); `messenger-run-task-consumer` runs `search-worker`;
 * `messenger-run-synchronizer` runs `synchronizer`.
 */
import type { Config } from '../config';
import { buildInfra, type BuiltInfra } from '../infra';
import { dbFailureHint, pendingMigrations } from '../infra/db';
import { CannotStart } from '../infra/errors';
import { createLogger } from '../infra/logger';
import { Shutdown } from '../infra/shutdown';
import { webService } from './web';
import { searchWorkerService } from './search-worker';
import { synchronizerService } from './synchronizer';
import { serveRoleEndpoints } from './role-server';

/** One process role. */
export interface Service {
  name: string;
  /** Why this role cannot run with these settings (empty when it can). */
  problems(config: Config): string[];
  /** Port of its `/health` and `/metrics` when METRICS_PORT is unset (roles without HTTP). */
  metricsPort?: number;
  /** True when the role uses the broker (its `/health` then checks RabbitMQ). */
  usesBroker(config: Config): boolean;
  /** Starts the role over built infrastructure, registering its own close on `infra.shutdown`; resolves once the role works (a worker consumes). */
  start(infra: BuiltInfra): Promise<void>;
}

export const SERVICES = {
  web: webService,
  'search-worker': searchWorkerService,
  synchronizer: synchronizerService,
} satisfies Record<string, Service>;
export type ServiceName = keyof typeof SERVICES;

/** Where a process of these roles serves `/health` and `/metrics`: METRICS_PORT, else its role's own port. */
export function roleMetricsPort(config: Config, names: ServiceName[]): number {
  return config.metricsPort ?? names.map((n): number | undefined => SERVICES[n].metricsPort).find((p) => p !== undefined) ?? 9464;
}

/**
 * The migrations a shared PostgreSQL lacks (the embedded mode migrates in
 * buildInfra). Every request would fail on the missing tables with a 500
 * while /health said ok, so a role does not start on such a database. One
 * that cannot be reached is not judged: the process starts and answers 503
 * until it can.
 */
async function missingMigrations(infra: BuiltInfra): Promise<string[]> {
  if (infra.config.databaseUrl === undefined) return [];
  try {
    return await pendingMigrations(infra.db);
  } catch (err) {
    const hint = dbFailureHint(err, infra.config);
    infra.log.warn(
      { err: err instanceof Error ? err.message : String(err), ...(hint === undefined ? {} : { hint }) },
      'could not check the database for pending migrations; answering 503 until it can be used',
    );
    return [];
  }
}

/**
 * Runs the named roles in this process: checks the settings, builds the
 * infrastructure once, serves `/health` and `/metrics` on METRICS_PORT when
 * no role serves HTTP, and starts each role. "started" is logged once every
 * role works (a worker consumes: while RabbitMQ is away the broker logs that
 * it retries, and /health says so). Exits with a message on a setting that
 * cannot work; SIGTERM closes everything in reverse order, also during
 * start-up (then the start-up stops where it is, quietly, and the process
 * exits 0 once everything open is closed).
 */
export async function runServices(names: ServiceName[], config: Config, processName: string): Promise<BuiltInfra | undefined> {
  const services = names.map((n) => SERVICES[n]);
  const problems = services.flatMap((s) => s.problems(config));
  if (problems.length > 0) {
    process.stderr.write(`${processName} cannot start:\n  - ${problems.join('\n  - ')}\n`);
    process.exit(2);
  }
  const log = createLogger(config.logLevel, processName);
  const shutdown = new Shutdown(log);
  // Signals are handled from the start, so a SIGTERM during start-up still closes what is open.
  shutdown.onSignals(config.shutdownTimeoutMs);
  try {
    const infra = await buildInfra(config, log, shutdown);
    if (shutdown.started) return undefined;
    const missing = await missingMigrations(infra);
    if (shutdown.started) return undefined;
    if (missing.length > 0) {
      process.stderr.write(
        `${processName} cannot start:\n  - the database lacks migrations ${missing.join(', ')}: run messenger-db migrate (npm run migrate) first\n`,
      );
      await shutdown.run(config.shutdownTimeoutMs);
      process.exit(2);
    }
    if (!names.includes('web')) {
      // Served before the roles start, so /health tells what a worker still waits for.
      const endpoints = await serveRoleEndpoints(infra, services.some((s) => s.usesBroker(config)), roleMetricsPort(config, names));
      shutdown.add('health-and-metrics', (drainBy) => endpoints.drain(drainBy));
    }
    for (const s of services) {
      if (shutdown.started) return undefined;
      await s.start(infra);
    }
    if (shutdown.started) return undefined;
    log.info({ services: names }, `${processName} started`);
    return infra;
  } catch (err) {
    // Whatever the closing resources made fail half-way through start-up is not a failure to start.
    if (!shutdown.started) throw err;
    log.debug({ err: err instanceof Error ? err.message : String(err) }, 'start-up cut short by the shutdown');
    return undefined;
  }
}

/**
 * For an entrypoint whose start-up failed: one line on stderr, then exit code
 * 2 when it cannot start as set up (a supervisor or the cluster primary must
 * not retry it; docs/operations.md, "Exit codes"), else 1.
 */
export function exitOnStartFailure(processName: string): (err: unknown) => never {
  return (err) => {
    const text = err instanceof Error ? err.message : String(err);
    process.stderr.write(err instanceof CannotStart ? `${processName} cannot start: ${text}\n` : `${processName} failed to start: ${text}\n`);
    process.exit(err instanceof CannotStart ? 2 : 1);
  };
}
