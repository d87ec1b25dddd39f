#!/usr/bin/env node
import './keep-early-signals';
import { loadConfigOrExit } from './config';
import { exitOnStartFailure, runServices } from './services';

/**
 * messenger-run-task-consumer: the search worker role. Takes search tasks
 * from RabbitMQ, runs them against PostgreSQL and stores the outcome in
 * Redis; serves /health and /metrics on METRICS_PORT. SIGTERM finishes the
 * tasks in hand, then closes RabbitMQ, Redis and PostgreSQL in that order.
 */
runServices(['search-worker'], loadConfigOrExit(), 'messenger-run-task-consumer').catch(exitOnStartFailure('messenger-run-task-consumer'));
