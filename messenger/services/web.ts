import { createApp } from '../http/app';
import { listen } from '../http/server';
import { needsBroker } from '../infra';
import { prepareClusterWorker } from '../infra/metrics';
import type { Service } from './index';

/** The web role: the Koa app (and whatever apps serve on upgrades) on PORT. */
export const webService: Service = {
  name: 'web',
  problems: () => [],
  usesBroker: (config) => needsBroker(config),
  async start(infra) {
    const { config } = infra;
    prepareClusterWorker();
    const web = await createApp(infra);
    await web.start();
    infra.shutdown.add('apps', () => web.stop());
    const http = await listen(
      web.koa.callback(),
      config.port,
      config.host,
      (req, socket, head) => web.upgrade(req, socket, head),
      config.requestTimeoutMs,
    );
    infra.shutdown.add('http', (drainBy) => http.drain(drainBy));
    // Registered last, so it runs first: WebSockets close with 1001 (clients reconnect elsewhere and resume).
    infra.shutdown.add('websockets', () => web.closeUpgrades());
    infra.log.info(
      {
        address: http.server.address(),
        apps: web.apps.map((a) => a.name),
        database: config.databaseUrl === undefined ? `pglite:${config.dataDir}` : 'postgresql',
        kv: infra.kv.kind,
        events: infra.events.kind,
      },
      'messenger-api listening',
    );
  },
};
