import { searchConsumer } from '../apps/search';
import type { Service } from './index';

/** The search worker role: runs search tasks from the queue (messenger-run-task-consumer). */
export const searchWorkerService: Service = {
  name: 'search-worker',
  problems(config) {
    const out: string[] = [];
    if (config.rmqUrl === undefined) out.push('RMQ_URL is not set (in the embedded mode, search runs inside messenger-api)');
    if (config.databaseUrl === undefined) out.push('DATABASE_URL is not set (a separate consumer needs the shared PostgreSQL)');
    if (config.redisUrl === undefined) out.push('REDIS_URL is not set (task state and results live in the shared Redis)');
    return out;
  },
  metricsPort: 9464,
  usesBroker: () => true,
  // Resolves once tasks are consumed (RabbitMQ may be away for a while: the broker logs its retries).
  async start(infra) {
    const consumer = searchConsumer(infra);
    infra.shutdown.add('search-consumer', () => consumer.stop());
    await consumer.start();
    await consumer.consuming();
  },
};
