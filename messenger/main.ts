#!/usr/bin/env node
import cluster from 'node:cluster';
import { loadConfigOrExit, type Config } from './config';
import { createApp } from './app';
import { buildInfra } from './infra';
import { listen } from './infra/http';
import { createLogger } from './infra/logger';
import { prepareClusterWorker, serveClusterMetrics } from './infra/metrics';

/** Starts one web server process: infra, apps, HTTP; SIGTERM drains and closes in order. */
async function runWorker(config: Config): Promise<void> {
  prepareClusterWorker();
  const infra = await buildInfra(config);
  // Signals are handled from the start, so a SIGTERM during start-up still closes what is open.
  infra.shutdown.onSignals(config.shutdownTimeoutMs);
  const web = await createApp(infra);
  await web.start();
  infra.shutdown.add('apps', () => web.stop());
  const http = await listen(web.koa.callback(), config.port, config.host);
  infra.shutdown.add('http', (drainBy) => http.drain(drainBy));
  infra.log.info(
    {
      address: http.server.address(),
      apps: web.apps.map((a) => a.name),
      database: config.databaseUrl === undefined ? `pglite:${config.dataDir}` : 'postgresql',
      kv: infra.kv.kind,
    },
    'messenger-api listening',
  );
}

/** Delay before replacing a dead worker: short at first, longer while workers keep dying young. */
function restartDelay(recentDeaths: number): number {
  return Math.min(500 * 2 ** Math.max(0, recentDeaths - 1), 30_000);
}

/** The primary of a multi-worker run: forks WORKERS_NUM workers, replaces any that dies, stops them on SIGTERM. */
function runPrimary(config: Config): void {
  const log = createLogger(config.logLevel, 'messenger-primary');
  serveClusterMetrics();
  let stopping = false;
  const deaths: number[] = [];
  for (let i = 0; i < config.workersNum; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        log.info('all workers stopped');
        process.exit(0);
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
  log.info({ workers: config.workersNum, port: config.port }, 'messenger-api primary started');
}

function main(): void {
  const config = loadConfigOrExit();
  if (config.workersNum > 1 && cluster.isPrimary) {
    runPrimary(config);
    return;
  }
  runWorker(config).catch((err: unknown) => {
    process.stderr.write(`messenger-api failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}

main();
