#!/usr/bin/env node
import cluster from 'node:cluster';
import http from 'node:http';
import { ConfigError, loadConfig, type Config } from './config';
import { createApp } from './app';
import { buildInfra } from './infra';
import { createLogger } from './infra/logger';

/** Starts one web server process: infra, apps, HTTP; SIGTERM drains and closes in order. */
async function runWorker(config: Config): Promise<void> {
  const infra = await buildInfra(config);
  const web = await createApp(infra);
  await web.start();
  infra.shutdown.add('apps', () => web.stop());
  const server = http.createServer(web.koa.callback());
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(config.port, config.host, resolve));
  infra.shutdown.add('http', () => {
    // Stop accepting, let requests in flight finish, then drop idle keep-alives.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    return closed;
  });
  infra.shutdown.onSignals(config.shutdownTimeoutMs);
  const address = server.address();
  infra.log.info(
    {
      address,
      apps: web.apps.map((a) => a.name),
      database: config.databaseUrl === undefined ? `pglite:${config.dataDir}` : 'postgresql',
      kv: infra.kv.kind,
    },
    'messenger-api listening',
  );
}

/** The primary of a multi-worker run: forks WORKERS_NUM workers and replaces any that dies. */
function runPrimary(config: Config): void {
  const log = createLogger(config.logLevel, 'messenger-primary');
  let stopping = false;
  for (let i = 0; i < config.workersNum; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    log.warn({ pid: worker.process.pid, code, signal }, 'worker died; starting a new one');
    setTimeout(() => cluster.fork(), 500);
  });
  const stop = (signal: NodeJS.Signals) => {
    stopping = true;
    log.info({ signal }, 'stopping workers');
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    const timer = setTimeout(() => process.exit(1), config.shutdownTimeoutMs + 1000);
    timer.unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  log.info({ workers: config.workersNum, port: config.port }, 'messenger-api primary started');
}

function main(): void {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
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
