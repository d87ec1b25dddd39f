import { connect } from 'amqplib';
import type { Config } from '../config';
import type { Db } from './db';
import { pingDb } from './db';
import { describeFailure } from './errors';
import type { Kv } from './kv';

/** The outcome of one dependency check. */
export interface CheckResult {
  status: 'ok' | 'down';
  latency_ms: number;
  /** Why it is down, in a few words; never a connection string. */
  error?: string;
}

/** A named dependency check; `run` rejects (or times out) when the dependency does not answer. */
export interface Check {
  name: string;
  run: () => Promise<void>;
  /** Reported, but a failure does not make the process unhealthy (it still serves everything else). */
  advisory?: boolean;
}

function timeout(ms: number): Promise<never> {
  return new Promise((_, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    t.unref();
  });
}

/** Why a check failed, in a few words; never a connection string (infra/errors.ts). */
function reason(err: unknown): string {
  return describeFailure(err).reason;
}

/** Runs the checks in parallel, each bounded by `timeoutMs`, and reports each with its latency. */
/** Runs the checks and says whether any that matters (not advisory) is down. */
export async function runChecksWithVerdict(checks: Check[], timeoutMs: number): Promise<{ results: Record<string, CheckResult>; down: boolean }> {
  const results = await runAll(checks, timeoutMs);
  const down = checks.some((c) => !c.advisory && results[c.name]?.status === 'down');
  return { results, down };
}

/** Runs the checks in parallel, each bounded by `timeoutMs`, and reports each with its latency. */
async function runAll(checks: Check[], timeoutMs: number): Promise<Record<string, CheckResult>> {
  const results = await Promise.all(
    checks.map(async (c): Promise<[string, CheckResult]> => {
      const started = process.hrtime.bigint();
      const ms = () => Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100;
      try {
        await Promise.race([c.run(), timeout(timeoutMs)]);
        return [c.name, { status: 'ok', latency_ms: ms() }];
      } catch (err) {
        return [c.name, { status: 'down', latency_ms: ms(), error: reason(err) }];
      }
    }),
  );
  return Object.fromEntries(results);
}

/** PostgreSQL (PGlite in the embedded mode) answers a trivial query. */
export function databaseCheck(db: Db): Check {
  return { name: 'postgresql', run: () => pingDb(db) };
}

/** Redis answers PING. */
export function kvCheck(kv: Kv): Check {
  return { name: 'redis', run: () => kv.ping() };
}

/**
 * RabbitMQ accepts a connection. The probe opens and closes its own short
 * connection so it tells the truth even where this process holds none (a web
 * process only publishes), and its result is kept for `cacheMs` so that
 * polling `/health` cannot flood the broker with connections.
 */
export function rabbitCheck(url: string, timeoutMs: number, cacheMs = 1000): Check {
  let last: { at: number; result: Promise<void> } | undefined;
  const probe = async () => {
    const conn = await connect(url, { timeout: timeoutMs });
    conn.on('error', () => {});
    await conn.close();
  };
  return {
    name: 'rabbitmq',
    run() {
      const now = Date.now();
      if (last === undefined || now - last.at > cacheMs) {
        const result = probe();
        result.catch(() => {});
        last = { at: now, result };
      }
      return last.result;
    },
  };
}

/** The checks of every backing service this process uses in its mode. */
export function backingChecks(config: Config, db: Db, kv: Kv, usesBroker: boolean): Check[] {
  const checks: Check[] = [databaseCheck(db)];
  if (kv.kind === 'redis') checks.push(kvCheck(kv));
  if (config.rmqUrl !== undefined && usesBroker) checks.push(rabbitCheck(config.rmqUrl, config.dbTimeoutMs));
  return checks;
}

/**
 * Whether anything consumes `queue` (RabbitMQ counts the consumers). Advisory:
 * a web process without a search worker (or, in the write-behind mode, a
 * synchronizer) still serves every other operation, but its search tasks stay
 * WAITING (its queued messages are never stored), and /health says so.
 */
export function consumerCheck(
  name: string,
  queue: string,
  count: (queue: string) => Promise<number | undefined>,
  command = 'messenger-run-task-consumer',
): Check {
  return {
    name,
    advisory: true,
    async run() {
      const n = await count(queue);
      if (n === undefined) throw new Error('the broker cannot tell');
      if (n === 0) throw new Error(`no consumer on ${queue}: start ${command}`);
    },
  };
}
