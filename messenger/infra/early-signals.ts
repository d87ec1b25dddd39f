/**
 * A SIGTERM or SIGINT that comes while a worker's modules load (a few
 * hundred milliseconds) would kill it with no shutdown at all. The worker
 * entrypoints keep such a signal (messenger/keep-early-signals.ts, imported
 * first) and `Shutdown.onSignals` takes it, then shuts down at once.
 */
let early: NodeJS.Signals[] | undefined;
const keep = (signal: NodeJS.Signals) => early?.push(signal);

/** From now until `takeEarlySignal`, a SIGTERM or SIGINT is kept instead of ending the process. */
export function keepEarlySignals(): void {
  early = [];
  process.once('SIGTERM', keep);
  process.once('SIGINT', keep);
}

/** The first signal kept by `keepEarlySignals`, if any; stops keeping them. */
export function takeEarlySignal(): NodeJS.Signals | undefined {
  process.removeListener('SIGTERM', keep);
  process.removeListener('SIGINT', keep);
  const first = early?.[0];
  early = undefined;
  return first;
}
