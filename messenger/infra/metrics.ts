import cluster from 'node:cluster';
import { createHash, timingSafeEqual } from 'node:crypto';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Db } from './db';

/**
 * The process's Prometheus metrics. One registry per process; apps import the
 * named metrics below and update them (the search app fills the task metrics).
 * With several web workers the worker answering `/metrics` asks the primary to
 * gather every worker's registry, so a scrape sees the whole instance.
 */
export const registry = new Registry();

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Search tasks finished by a consumer, by outcome (`success`, `failed`, `timeout`, `retry`). */
export const searchTasks = new Counter({
  name: 'messenger_search_tasks_total',
  help: 'Search tasks run by this consumer, by outcome',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

/** Time a consumer spent on one search task, by outcome. */
export const searchTaskDuration = new Histogram({
  name: 'messenger_search_task_duration_seconds',
  help: 'Search task run time, by outcome',
  labelNames: ['outcome'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});

/** Domain events broadcast to the other instances, by event and outcome (`sent`, `lost`). */
export const eventsPublished = new Counter({
  name: 'messenger_events_published_total',
  help: 'Domain events broadcast through the pub/sub port, by event and outcome',
  labelNames: ['event', 'outcome'] as const,
  registers: [registry],
});

/** Messages the synchronizer handled, by outcome (`stored`, `duplicate`, `dead`). */
export const syncMessages = new Counter({
  name: 'messenger_sync_messages_total',
  help: 'Queued messages handled by the synchronizer, by outcome',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

/** Time from a message being queued (its 201) to its row being committed. */
export const syncLag = new Histogram({
  name: 'messenger_sync_lag_seconds',
  help: 'Time from queueing a message (its 201) to storing it',
  buckets: [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

/** Open real-time (WebSocket) connections on this process. */
export const wsConnections = new Gauge({
  name: 'messenger_ws_connections',
  help: 'Open WebSocket connections on GET /v1/events',
  registers: [registry],
});

/** WebSocket frames, by direction (`in`, `out`) and frame type. */
export const wsFrames = new Counter({
  name: 'messenger_ws_frames_total',
  help: 'WebSocket frames received and sent, by direction and frame type',
  labelNames: ['direction', 'type'] as const,
  registers: [registry],
});

/** Time from a message's creation (its created_at) to its frame being written to a socket. */
export const wsDeliveryLatency = new Histogram({
  name: 'messenger_ws_delivery_latency_seconds',
  help: 'Delay from a message being stored to its frame being sent on a WebSocket, live and replayed',
  labelNames: ['path'] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60],
  registers: [registry],
});

/** WebSocket connections closed by the server, by reason. */
export const wsClosed = new Counter({
  name: 'messenger_ws_closed_total',
  help: 'WebSocket connections closed by the server, by reason',
  labelNames: ['reason'] as const,
  registers: [registry],
});

// Databases whose pool is reported; the ops app adds its own on start.
const pools = new Set<Db>();

interface PoolLike {
  numUsed(): number;
  numFree(): number;
  numPendingAcquires(): number;
}

function poolOf(db: Db): PoolLike | undefined {
  const pool = (db.client as { pool?: unknown }).pool;
  if (pool === null || typeof pool !== 'object') return undefined;
  const p = pool as Partial<PoolLike>;
  return typeof p.numUsed === 'function' && typeof p.numFree === 'function' && typeof p.numPendingAcquires === 'function'
    ? (p as PoolLike)
    : undefined;
}

new Gauge({
  name: 'messenger_db_pool_connections',
  help: 'Database pool connections: used, free, and acquires waiting for one',
  labelNames: ['state'] as const,
  registers: [registry],
  collect() {
    let used = 0;
    let free = 0;
    let pending = 0;
    for (const db of pools) {
      const p = poolOf(db);
      if (p === undefined) continue;
      used += p.numUsed();
      free += p.numFree();
      pending += p.numPendingAcquires();
    }
    this.set({ state: 'used' }, used);
    this.set({ state: 'free' }, free);
    this.set({ state: 'pending' }, pending);
  },
});

/** Reports `db`'s connection pool in `messenger_db_pool_connections` until untracked. */
export function trackPool(db: Db): () => void {
  pools.add(db);
  return () => pools.delete(db);
}

let defaultsOn = false;

/** Turns on process metrics (event-loop lag, memory, CPU, handles); once per process. */
export function enableProcessMetrics(): void {
  if (defaultsOn) return;
  defaultsOn = true;
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });
}

interface Series {
  operation: string;
  status: string;
  count: number;
  sum: number;
  /** Observations per bucket, not cumulative; the last slot is +Inf. */
  buckets: Float64Array;
}

// Request metrics are kept in plain numbers: prom-client's labelled observe
// hashes the label set and allocates on every call, which showed on /ping
// throughput. These are turned into Prometheus samples only when scraped.
const requestSeries = new Map<string, Map<number, Series>>();

/** Counts one answered request and its latency; no allocation once the (operation, status) pair has been seen. */
export function observeRequest(operation: string, status: number, seconds: number): void {
  let byStatus = requestSeries.get(operation);
  if (byStatus === undefined) {
    byStatus = new Map();
    requestSeries.set(operation, byStatus);
  }
  let series = byStatus.get(status);
  if (series === undefined) {
    series = { operation, status: String(status), count: 0, sum: 0, buckets: new Float64Array(LATENCY_BUCKETS.length + 1) };
    byStatus.set(status, series);
  }
  series.count++;
  series.sum += seconds;
  let i = 0;
  while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]) i++;
  series.buckets[i]++;
}

interface Sample {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
  sharedLabels?: Record<string, string>;
}

function* allSeries(): Generator<Series> {
  for (const byStatus of requestSeries.values()) yield* byStatus.values();
}

/**
 * A metric the registry reads through the same `get()` its own metrics
 * have; prom-client's typings only name its classes, hence the cast.
 */
function register(name: string, help: string, type: 'counter' | 'histogram', values: () => Sample[]): void {
  const metric = {
    name,
    help,
    type,
    aggregator: 'sum' as const,
    async get() {
      return { name, help, type, aggregator: 'sum' as const, values: values() };
    },
    reset() {
      requestSeries.clear();
    },
  };
  registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
}

register('messenger_http_requests_total', 'HTTP requests answered, by operation and status', 'counter', () =>
  [...allSeries()].map((s) => ({ value: s.count, labels: { operation: s.operation, status: s.status } })),
);

register('messenger_http_request_duration_seconds', 'HTTP request latency, by operation and status', 'histogram', () => {
  const out: Sample[] = [];
  const name = 'messenger_http_request_duration_seconds';
  for (const s of allSeries()) {
    const labels = { operation: s.operation, status: s.status };
    let cumulative = 0;
    for (let i = 0; i <= LATENCY_BUCKETS.length; i++) {
      cumulative += s.buckets[i];
      const le = i < LATENCY_BUCKETS.length ? LATENCY_BUCKETS[i] : '+Inf';
      out.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative, sharedLabels: {} });
    }
    out.push({ metricName: `${name}_sum`, labels, value: s.sum, sharedLabels: {} });
    out.push({ metricName: `${name}_count`, labels, value: s.count, sharedLabels: {} });
  }
  return out;
});

const REQ = 'messenger:metrics-req';
const RES = 'messenger:metrics-res';

interface MetricsReply {
  type: typeof RES;
  id: number;
  text?: string;
  error?: string;
}

function isReply(m: unknown): m is MetricsReply {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === RES && typeof (m as { id?: unknown }).id === 'number';
}

/** In the primary of a multi-worker run: answers workers' requests for the whole instance's metrics. */
export function serveClusterMetrics(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, message: unknown) => {
    if (typeof message !== 'object' || message === null || (message as { type?: unknown }).type !== REQ) return;
    const id = (message as { id?: unknown }).id;
    aggregator.clusterMetrics().then(
      (text) => worker.isConnected() && worker.send({ type: RES, id, text }),
      (err: unknown) => worker.isConnected() && worker.send({ type: RES, id, error: err instanceof Error ? err.message : String(err) }),
    );
  });
}

let workerReady = false;
let nextId = 0;
const waiting = new Map<number, (reply: MetricsReply) => void>();

function joinCluster(): void {
  if (workerReady) return;
  workerReady = true;
  // Lets the primary's AggregatorRegistry read this worker's registry over IPC.
  AggregatorRegistry.setRegistries([registry]);
  new AggregatorRegistry();
  process.on('message', (m: unknown) => {
    if (!isReply(m)) return;
    const resolve = waiting.get(m.id);
    waiting.delete(m.id);
    resolve?.(m);
  });
}

/** The Prometheus text for this process, or for every worker of the instance when run under node:cluster. */
export async function metricsText(): Promise<string> {
  if (!cluster.isWorker || process.send === undefined) return registry.metrics();
  joinCluster();
  const id = nextId++;
  const reply = await new Promise<MetricsReply | undefined>((resolve) => {
    const timer = setTimeout(() => {
      waiting.delete(id);
      resolve(undefined);
    }, 6000);
    waiting.set(id, (r) => {
      clearTimeout(timer);
      resolve(r);
    });
    process.send?.({ type: REQ, id });
  });
  // The primary is busy or gone: this worker's own numbers beat no answer.
  if (reply?.text === undefined) return registry.metrics();
  return reply.text;
}

/** Content type of the Prometheus text format. */
export const METRICS_CONTENT_TYPE = registry.contentType;

/** Call in every web worker at start so the primary can collect this worker's metrics. */
export function prepareClusterWorker(): void {
  if (cluster.isWorker) joinCluster();
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/**
 * Who may read `/metrics`: anyone without METRICS_TOKEN, else only
 * `Authorization: Bearer <token>`, compared as digests so the comparison
 * takes the same time whatever the length sent. The header is read through
 * `authorization` (the request's one Authorization header, throwing on
 * several, as everywhere else), and only when a token is set: without one
 * the path is public and its headers count for nothing.
 */
export function metricsGate(token: string | undefined): (authorization: () => string | undefined) => boolean {
  if (token === undefined) return () => true;
  const expected = digest(`Bearer ${token}`);
  return (authorization) => timingSafeEqual(digest(authorization() ?? ''), expected);
}
