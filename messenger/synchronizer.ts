#!/usr/bin/env node
import './keep-early-signals';
import { loadConfigOrExit } from './config';
import { runServices } from './services';

/**
 * messenger-run-synchronizer: the synchronizer role of the write-behind
 * storage mode (MESSAGE_STORAGE_TYPE=rabbitmq). Bulk-inserts queued messages
 * into PostgreSQL and publishes `message.stored`; serves /health and
 * /metrics on METRICS_PORT. SIGTERM finishes the batch in hand, then closes
 * RabbitMQ, Redis and PostgreSQL in that order.
 */
runServices(['synchronizer'], loadConfigOrExit(), 'messenger-run-synchronizer').catch((err: unknown) => {
  process.stderr.write(`messenger-run-synchronizer failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
