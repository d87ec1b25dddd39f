import { keepEarlySignals } from './infra/early-signals';

// Imported first by the worker entrypoints: a SIGTERM while the rest loads still ends in an orderly shutdown.
keepEarlySignals();
