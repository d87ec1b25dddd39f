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
import { createLogger } from '../infra/logger';
import { webService } from './web';
import { searchWorkerService } from './search-worker';
import { synchronizerService } from './synchronizer';
import { serveRoleEndpoints } from './role-server';

/** One process role. */
export interface Service {
  name: string;
  /** Why this role cannot run with these settings (empty when it can). */
  problems(config: Config): string[];
  /** True when the role uses the broker (its `/health` then checks RabbitMQ). */
  usesBroker(config: Config): boolean;
  /** Starts the role over built infrastructure, registering its own close on `infra.shutdown`. */
  start(infra: BuiltInfra): Promise<void>;
}

export const SERVICES = {
  web: webService,
  'search-worker': searchWorkerService,
  synchronizer: synchronizerService,
} satisfies Record<string, Service>;
export type ServiceName = keyof typeof SERVICES;

/**
 * Runs the named roles in this process: checks the settings, builds the
 * infrastructure once, starts each role, and serves `/health` and
 * `/metrics` on METRICS_PORT when no role serves HTTP. Exits with a message
 * on a setting that cannot work; SIGTERM closes everything in reverse order.
 */
export async function runServices(names: ServiceName[], config: Config, processName: string): Promise<BuiltInfra> {
  const services = names.map((n) => SERVICES[n]);
  const problems = services.flatMap((s) => s.problems(config));
  if (problems.length > 0) {
    process.stderr.write(`${processName} cannot start:\n  - ${problems.join('\n  - ')}\n`);
    process.exit(2);
  }
  const infra = await buildInfra(config, createLogger(config.logLevel, processName));
  // Signals are handled from the start, so a SIGTERM during start-up still closes what is open.
  infra.shutdown.onSignals(config.shutdownTimeoutMs);
  for (const s of services) await s.start(infra);
  if (!names.includes('web')) {
    const endpoints = await serveRoleEndpoints(infra, services.some((s) => s.usesBroker(config)));
    infra.shutdown.add('health-and-metrics', (drainBy) => endpoints.drain(drainBy));
  }
  infra.log.info({ services: names }, `${processName} started`);
  return infra;
}
