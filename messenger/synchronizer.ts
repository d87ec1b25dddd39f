#!/usr/bin/env node
import './keep-early-signals';
import { loadConfigOrExit } from './config';
import { exitOnStartFailure, runServices } from './services';

/**
 * messenger-run-synchronizer: the synchronizer role of the write-behind
 * storage mode (MESSAGE_STORAGE_TYPE=rabbitmq). Bulk-inserts queued messages
 * into PostgreSQL and publishes `message.stored`; serves /health and
 * /metrics on METRICS_PORT. SIGTERM finishes the batch in hand, then closes
 * RabbitMQ, Redis and PostgreSQL in that order.
 */
runServices(['synchronizer'], loadConfigOrExit(), 'messenger-run-synchronizer').catch(exitOnStartFailure('messenger-run-synchronizer'));
