#!/usr/bin/env node
// First: a SIGTERM while the rest loads is kept for an orderly shutdown, not the default kill (exit 143).
import './keep-early-signals';
import cluster from 'node:cluster';
import { takeEarlySignal } from './infra/early-signals';
import { loadConfigOrExit, type Config } from './config';
import { createLogger } from './infra/logger';
import { serveClusterMetrics } from './infra/metrics';
import { exitOnStartFailure, runServices } from './services';

/** Delay before replacing a dead worker: short at first, longer while workers keep dying young. */
function restartDelay(recentDeaths: number): number {
  return Math.min(500 * 2 ** Math.max(0, recentDeaths - 1), 30_000);
}

/**
 * The primary of a multi-worker run: forks WORKERS_NUM workers, replaces any that dies (with a
 * growing delay), stops them on SIGTERM; exits with code 2 when a worker exits with 2 (it cannot
 * start as set up, and no replacement could).
 */
function runPrimary(config: Config): void {
  const log = createLogger(config.logLevel, 'messenger-primary');
  serveClusterMetrics();
  let stopping = false;
  // 0 after a SIGTERM; 2 when a worker could not start as set up.
  let exitCode = 0;
  const deaths: number[] = [];
  for (let i = 0; i < config.workersNum; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    // Exit code 2 is a worker saying it cannot start as set up (a setting that cannot work, a
    // database without its migrations): a new worker would fail the same way, for ever. Stop all.
    if (code === 2 && !stopping) {
      stopping = true;
      exitCode = 2;
      log.error({ workerPid: worker.process.pid }, 'a worker cannot start as set up (its stderr says why); stopping');
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    }
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        log.info('all workers stopped');
        process.exit(exitCode);
      }
      return;
    }
    const now = Date.now();
    deaths.push(now);
    while (deaths.length > 0 && now - deaths[0] > 60_000) deaths.shift();
    const delay = restartDelay(deaths.length);
    log.warn({ workerPid: worker.process.pid, code, signal, restartInMs: delay }, 'worker died; starting a new one');
    setTimeout(() => {
      if (!stopping) cluster.fork();
    }, delay);
  });
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping workers');
    // Each worker drains and force-quits on its own within SHUTDOWN_TIMEOUT_MS; this is the backstop.
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    const timer = setTimeout(() => {
      log.error('workers did not stop in time; killing them');
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
      process.exit(1);
    }, config.shutdownTimeoutMs + 2000);
    timer.unref();
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // A signal that came while the modules loaded: the workers just forked are stopped at once.
  const early = takeEarlySignal();
  if (early !== undefined) stop(early);
  log.info({ workers: config.workersNum, port: config.port }, 'messenger-api primary started');
}

function main(): void {
  const config = loadConfigOrExit();
  if (config.workersNum > 1 && cluster.isPrimary) {
    runPrimary(config);
    return;
  }
  runServices(['web'], config, 'messenger-api').catch(exitOnStartFailure('messenger-api'));
}

main();
