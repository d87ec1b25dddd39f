import { synchronizer } from '../apps/messages/synchronizer';
import { mountReactors } from '../apps/registry';
import { buildApps } from '../http/app';
import type { Service } from './index';

/**
 * The synchronizer role (messenger-run-synchronizer): stores the messages
 * the web processes queued in the write-behind mode. It publishes
 * `message.stored` itself, so the enabled apps' reactions to it (cache
 * invalidation, the poster's read marker) are mounted here, built by the
 * same code as in the web process; no app is started and no HTTP is served
 * (only /health and /metrics on METRICS_PORT).
 */
export const synchronizerService: Service = {
  name: 'synchronizer',
  problems(config) {
    const out: string[] = [];
    if (config.messageStorage !== 'rabbitmq') out.push(`MESSAGE_STORAGE_TYPE is ${config.messageStorage}; the synchronizer only runs in the rabbitmq mode`);
    if (config.rmqUrl === undefined) out.push('RMQ_URL is not set (in the embedded mode, the synchronizer runs inside messenger-api)');
    if (config.databaseUrl === undefined) out.push('DATABASE_URL is not set (a separate synchronizer needs the shared PostgreSQL)');
    return out;
  },
  // Beside a search worker's 9464, so the two run on one host with the defaults.
  metricsPort: 9465,
  usesBroker: () => true,
  async start(infra) {
    const unmount = mountReactors(infra, buildApps(infra));
    const sync = synchronizer(infra);
    infra.shutdown.add('synchronizer', async () => {
      await sync.stop();
      unmount();
    });
    await sync.start();
    // Resolves once messages are consumed (RabbitMQ may be away for a while: the broker logs its retries).
    await sync.consuming();
  },
};
