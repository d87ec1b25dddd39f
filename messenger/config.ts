/**
 * The one place that reads `process.env`. Every setting is parsed and checked
 * here; a bad value stops start-up with a list of every problem at once.
 */

import fs from 'node:fs';
import { isIP } from 'node:net';
import os from 'node:os';
import { appDirectories } from './apps/registry';

/**
 * Every app APPS can name: the folders of `messenger/apps/` (one folder per
 * app; `core` and `ops` are always on). The default turns them all on.
 */
export const ALL_APPS: readonly string[] = appDirectories();
const DEFAULT_APPS: readonly string[] = ALL_APPS;
export type AppName = string;

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  host: string;
  port: number;
  workersNum: number;
  /** PGlite data directory for the embedded mode; `memory://` keeps it in memory. */
  dataDir: string;
  /** PostgreSQL connection string; undefined selects embedded PGlite. */
  databaseUrl: string | undefined;
  poolSize: number;
  /** Longest wait for a database connection or query before answering 503. */
  dbTimeoutMs: number;
  /** Redis connection string; undefined selects the in-process store. */
  redisUrl: string | undefined;
  /** Prefix of every Redis key, so several deployments or test runs can share a server. */
  redisPrefix: string;
  /** RabbitMQ connection string; undefined selects the in-process queue. */
  rmqUrl: string | undefined;
  /** Bound of one RabbitMQ connect attempt while the broker sends nothing, before it is retried. */
  rmqConnectTimeoutMs: number;
  apps: AppName[];
  sessionTtlSeconds: number;
  /** Absolute lifetime of a login chain (its refresh tokens and sessions), from the login. */
  refreshTtlSeconds: number;
  bcryptCost: number;
  /** Worker threads that hash and compare passwords, off the event loop. */
  bcryptThreads: number;
  /** How much lower than the process's the priority of those threads is (Linux nice, 0–19). */
  bcryptNice: number;
  messageMaxLength: number;
  bodyLimitBytes: number;
  /** Other origins whose browser pages may call the API and open WebSockets (exact `scheme://host[:port]`). */
  corsOrigins: string[];
  /** Longest time to receive a whole request (headers and body) before answering 408. */
  requestTimeoutMs: number;
  logLevel: LogLevel;
  /** Grace period for in-flight work on SIGTERM before the process quits anyway. */
  shutdownTimeoutMs: number;
  /** When set, `/metrics` needs `Authorization: Bearer <token>`; unset, it is public. */
  metricsToken: string | undefined;
  /**
   * Port of `/health` and `/metrics` in a process without the web role (the
   * workers); unset, each role has its own (services/index.ts), so a search
   * worker and a synchronizer can run side by side on one host.
   */
  metricsPort: number | undefined;
  search: {
    queue: string;
    timeoutMs: number;
    taskTtlSeconds: number;
    maxAttempts: number;
    /** Unfinished (WAITING or IN_PROCESS) tasks one account may have; past it a new search is refused. */
    maxUnfinished: number;
    prefetch: number;
    /** Run the consumer inside the web process (always true with the in-process queue). */
    inProcessConsumer: boolean;
  };
  throttling: {
    rpsLimit: number;
    loginMaxFailures: number;
    /** Failed logins from one client address (any names) before it is locked out; at least loginMaxFailures. */
    loginMaxFailuresPerAddress: number;
    loginWindowSeconds: number;
    /** Addresses of proxies whose X-Forwarded-For is believed. */
    trustedProxies: string[];
  };
  cache: {
    ttlSeconds: number;
    /** Bytes of new or grown pages one chat may add to the cache per `ttlSeconds` (the cache's bound). */
    chatMaxBytes: number;
    /**
     * Bytes all cached pages together may hold in the embedded mode's
     * in-process store, least recently used dropped first (Redis: its maxmemory).
     */
    memoryMaxBytes: number;
  };
  /** Where a posted message goes (docs/storage-modes.md). */
  messageStorage: MessageStorage;
  /**
   * Least time between two moves of the search indexes' pending lists into
   * the indexes, done beside the write path after stores (0: left to the
   * inserts and autovacuum). Services mode only.
   */
  indexCleanMs: number;
  sync: {
    /** Queue of the write-behind mode (its dead-letter queue is `<name>.dead`). */
    queue: string;
    /** Most messages one synchronizer insert takes (also its prefetch). */
    bulkSize: number;
    /** Longest wait of a queued message for more to come before it is inserted. */
    flushMs: number;
    /** Run the synchronizer inside the web process (always with the in-process queue). */
    inProcess: boolean;
  };
  realtime: {
    /** Open WebSocket connections per account on one instance. */
    maxPerAccount: number;
    /** Open WebSocket connections on one instance (process), all accounts together. */
    maxConnections: number;
    /** A connection whose unsent frames pass this many bytes is closed instead of buffered. */
    maxBufferBytes: number;
    /** Ping interval; a peer that has not answered the previous ping by the next is dropped. */
    pingMs: number;
    /**
     * Lifetime of an account's presence mark; instances renew marks every
     * third of it, and an account whose instance died is announced offline
     * within this + 5 s (at most 50, so within SPEC's 60 s).
     */
    presenceTtlSeconds: number;
  };
}

/** `db_direct`: 201 once committed; `rabbitmq`: 201 once queued (write-behind); `no_storage`: real time only. */
export const MESSAGE_STORAGE_TYPES = ['db_direct', 'rabbitmq', 'no_storage'] as const;
export type MessageStorage = (typeof MESSAGE_STORAGE_TYPES)[number];

/** Raised when the environment holds bad settings; lists every problem. */
export class ConfigError extends Error {
  constructor(public readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

class Reader {
  readonly problems: string[] = [];
  constructor(private readonly env: Env) {}

  str(name: string, fallback: string): string {
    const v = this.env[name];
    return v === undefined || v === '' ? fallback : v;
  }

  optional(name: string): string | undefined {
    const v = this.env[name];
    return v === undefined || v === '' ? undefined : v;
  }

  int(name: string, fallback: number, min: number, max: number): number {
    const raw = this.env[name];
    if (raw === undefined || raw === '') return fallback;
    if (!/^-?\d+$/.test(raw.trim())) {
      this.problems.push(`${name} must be a whole number, got "${raw}"`);
      return fallback;
    }
    const n = Number(raw);
    if (n < min || n > max) {
      this.problems.push(`${name} must be between ${min} and ${max}, got ${n}`);
      return fallback;
    }
    return n;
  }

  bool(name: string, fallback: boolean): boolean {
    const raw = this.env[name];
    if (raw === undefined || raw === '') return fallback;
    const v = raw.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(v)) return true;
    if (['0', 'false', 'no', 'off'].includes(v)) return false;
    this.problems.push(`${name} must be 1/0, true/false, yes/no or on/off, got "${raw}"`);
    return fallback;
  }

  bytes(name: string, fallback: number): number {
    const raw = this.env[name];
    if (raw === undefined || raw === '') return fallback;
    const m = /^(\d+)\s*(b|kb|kib|mb|mib)?$/i.exec(raw.trim());
    if (!m) {
      this.problems.push(`${name} must be a size such as 1048576, 512kb or 1mb, got "${raw}"`);
      return fallback;
    }
    const unit = (m[2] ?? 'b').toLowerCase();
    const mult = unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 * 1024 : 1;
    const n = Number(m[1]) * mult;
    if (n < 1024 || n > 64 * 1024 * 1024) {
      this.problems.push(`${name} must be between 1kb and 64mb, got "${raw}"`);
      return fallback;
    }
    return n;
  }

  /**
   * A RabbitMQ queue name: RabbitMQ refuses `amq.*` names and names over 255
   * bytes, and `<name>.dead` (its dead-letter queue) must fit too; refused
   * there, the worker exited 1 with the broker's "ACCESS_REFUSED" or amqplib's
   * "Field 'queue' is the wrong type".
   */
  queue(name: string, fallback: string): string {
    const v = this.str(name, fallback);
    if (v.trim() === '' || v !== v.trim() || v.startsWith('amq.') || Buffer.byteLength(v) > 250 || [...v].some((c) => c.charCodeAt(0) < 0x20 || c === '\x7f')) {
      this.problems.push(
        `${name} must be a RabbitMQ queue name of 1 to 250 bytes (its dead-letter queue adds ".dead"), not starting with "amq." (reserved), without surrounding spaces or control characters`,
      );
    }
    return v;
  }

  /**
   * A service URL: one of `protocols`, naming a host (pg's `?host=/socket/dir`
   * counts) and, where `path` says, a database: `postgres://` alone started
   * and failed every request with "no PostgreSQL user name specified", and
   * `redis://` or `amqp://` silently meant localhost.
   */
  url(name: string, protocols: string[], example: string, path?: { rule: string; test: (pathname: string) => boolean }): string | undefined {
    const raw = this.optional(name);
    if (raw === undefined) return undefined;
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      // Never echoed: it may hold a password.
      this.problems.push(`${name} is not a valid URL (such as ${example}; percent-encode @ : / in the password)`);
      return raw;
    }
    if (!protocols.includes(u.protocol)) {
      this.problems.push(`${name} must start with ${protocols.map((p) => `${p}//`).join(' or ')}, got "${u.protocol}//"`);
      return raw;
    }
    const socketHost = u.searchParams.get('host');
    if (u.hostname === '' && (socketHost === null || socketHost === '')) this.problems.push(`${name} names no host (such as ${example})`);
    if (path !== undefined && !path.test(u.pathname)) this.problems.push(`${name} ${path.rule} (such as ${example})`);
    return raw;
  }
}

/** Builds a PostgreSQL URL from the original service's POSTGRES_* variables. */
function postgresFromParts(r: Reader): string | undefined {
  const hosts = r.optional('POSTGRES_HOSTS');
  if (hosts === undefined) return undefined;
  const user = encodeURIComponent(r.str('POSTGRES_USER', 'postgres'));
  const password = r.optional('POSTGRES_PASSWORD');
  const db = encodeURIComponent(r.str('POSTGRES_DB', 'messenger'));
  const port = r.int('POSTGRES_PORT', 5432, 1, 65535);
  // The original accepted a comma-separated host list; pg connects to the first.
  const host = hosts.split(',')[0].trim();
  const auth = password === undefined ? user : `${user}:${encodeURIComponent(password)}`;
  const url = `postgres://${auth}@${host}:${port}/${db}`;
  let parsedHost = '';
  try {
    parsedHost = new URL(url).hostname;
  } catch {
    // Reported below: the process would start and fail every query with "Invalid URL".
  }
  if (host === '' || parsedHost === '') {
    r.problems.push(`POSTGRES_HOSTS must start with a host name or address (db, 10.0.0.5, db1,db2), got "${hosts}"`);
  }
  return url;
}

function parseApps(r: Reader, authDisabled: boolean): AppName[] {
  const raw = r.optional('APPS');
  let names: string[] = raw === undefined ? [...DEFAULT_APPS] : raw.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = names.filter((n) => !(ALL_APPS as readonly string[]).includes(n));
  if (unknown.length > 0) {
    r.problems.push(`APPS has unknown app(s) ${unknown.join(', ')}; known: ${ALL_APPS.join(', ')}`);
    names = names.filter((n) => !unknown.includes(n));
  }
  if (raw !== undefined && names.length === 0) {
    // `APPS=,` (or a list built from empty variables) ran no app at all: every operation 404.
    r.problems.push(`APPS names no app ("${raw}"); leave it unset for all of them: ${ALL_APPS.join(', ')}`);
  }
  let apps = [...new Set(names)] as AppName[];
  if (authDisabled) {
    apps = apps.filter((a) => a !== 'auth');
    // The original's switch with the default list: drop what cannot work
    // without accounts (search, conversations and real time are per account).
    // An explicit APPS naming one of them with auth off is still refused at start-up.
    if (raw === undefined) apps = apps.filter((a) => a !== 'search' && a !== 'conversations' && a !== 'realtime');
  }
  return apps;
}

/**
 * TRUSTED_PROXIES as the peers show up on a socket: IP addresses only, an
 * IPv4-mapped one as plain IPv4 and IPv6 in its short form. The list is
 * matched exactly, so a hostname, a range or a port would silently never
 * match, and every client behind the proxy would share its address.
 */
function parseTrustedProxies(r: Reader): string[] {
  const out: string[] = [];
  const bad: string[] = [];
  for (const raw of r.str('TRUSTED_PROXIES', '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const mapped = raw.toLowerCase().startsWith('::ffff:') && isIP(raw.slice(7)) === 4 ? raw.slice(7) : raw;
    if (isIP(mapped) === 4) out.push(mapped);
    else if (isIP(mapped) === 6) {
      let short = mapped.toLowerCase();
      try {
        short = new URL(`http://[${mapped}]/`).hostname.slice(1, -1);
      } catch {
        // A zone id (fe80::1%eth0) is no URL host; kept as written.
      }
      out.push(short);
    } else bad.push(`"${raw}"`);
  }
  if (bad.length > 0) {
    r.problems.push(`TRUSTED_PROXIES must list IP addresses such as 172.28.0.10 or ::1 (no hostnames, ranges or ports), got ${bad.join(', ')}`);
  }
  return out;
}

/**
 * HOST: an IP address (`0.0.0.0`, `::`, `127.0.0.1`) or a host name
 * (`localhost`, a container's name). Anything else (`256.1.1.1`,
 * `127.0.0.1:8080`, `[::1]`, a URL) failed only at listen, with exit code 1,
 * as if the process had crashed; it is a setting that cannot work.
 */
function parseHost(r: Reader): string {
  const raw = r.str('HOST', '127.0.0.1');
  const labels = raw.endsWith('.') ? raw.slice(0, -1).split('.') : raw.split('.');
  const hostname =
    raw.length <= 253 &&
    labels.every((l) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l)) &&
    // All-numeric labels are an IPv4 address or nothing (256.1.1.1 is no name).
    !labels.every((l) => /^\d+$/.test(l));
  if (isIP(raw) === 0 && !hostname) {
    r.problems.push(`HOST must be an IP address such as 0.0.0.0, 127.0.0.1 or :: (no brackets, no port) or a host name, got "${raw}"`);
  }
  return raw;
}

/** CORS_ORIGINS: a comma-separated list of origins such as `https://chat.example.com`. */
function parseOrigins(r: Reader): string[] {
  const out: string[] = [];
  for (const raw of r.str('CORS_ORIGINS', '').split(',').map((s) => s.trim()).filter(Boolean)) {
    let origin: string | undefined;
    try {
      origin = new URL(raw).origin;
    } catch {
      origin = undefined;
    }
    if (origin === undefined || origin === 'null' || origin !== raw.replace(/\/$/, '')) {
      r.problems.push(`CORS_ORIGINS must list origins such as https://chat.example.com (scheme, host, optional port), got "${raw}"`);
    } else out.push(origin);
  }
  return out;
}

/** Reads and validates the whole configuration; throws ConfigError listing every problem. */
export function loadConfig(env: Env = process.env): Config {
  const r = new Reader(env);
  const authDisabled = r.bool('AUTH_DISABLED', false);
  const throttlingOff = r.bool('NGINX_THROTTLING', false);
  let apps = parseApps(r, authDisabled);
  if (throttlingOff) apps = apps.filter((a) => a !== 'throttling');

  const databaseUrl =
    r.url('DATABASE_URL', ['postgres:', 'postgresql:'], 'postgres://user:password@db:5432/messenger', {
      rule: 'names no database',
      test: (p) => p.length > 1,
    }) ?? postgresFromParts(r);
  const logLevel = r.str('LOG_LEVEL', 'info');
  const levels: LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
  if (!levels.includes(logLevel as LogLevel)) {
    r.problems.push(`LOG_LEVEL must be one of ${levels.join(', ')}, got "${logLevel}"`);
  }
  const rmqExample = 'amqp://user:password@rabbitmq:5672';
  const rmqUrl = r.url('RMQ_URL', ['amqp:', 'amqps:'], rmqExample) ?? r.url('RABBITMQ_URL', ['amqp:', 'amqps:'], rmqExample);
  const metricsToken = r.optional('METRICS_TOKEN');
  if (metricsToken !== undefined && !/^[\x21-\x7e]{16,256}$/.test(metricsToken)) {
    r.problems.push('METRICS_TOKEN must be 16 to 256 printable characters without spaces');
  }
  const loginMaxFailures = r.int('LOGIN_MAX_FAILURES', 10, 1, 10000);
  // Unset, the address limit never falls below the name limit (a deployment that raised only the latter keeps working).
  const loginMaxFailuresPerAddress = r.int('LOGIN_MAX_FAILURES_PER_ADDRESS', Math.max(100, loginMaxFailures), 1, 1_000_000);
  if (loginMaxFailuresPerAddress < loginMaxFailures) {
    r.problems.push(
      `LOGIN_MAX_FAILURES_PER_ADDRESS (${loginMaxFailuresPerAddress}) must be at least LOGIN_MAX_FAILURES (${loginMaxFailures}): one person must not lock out everyone behind an address`,
    );
  }
  const messageStorage = r.str('MESSAGE_STORAGE_TYPE', 'db_direct');
  if (!(MESSAGE_STORAGE_TYPES as readonly string[]).includes(messageStorage)) {
    r.problems.push(`MESSAGE_STORAGE_TYPE must be one of ${MESSAGE_STORAGE_TYPES.join(', ')}, got "${messageStorage}"`);
  }
  const trusted = parseTrustedProxies(r);

  const workersNum = r.int('WORKERS_NUM', 1, 1, 64);
  const config: Config = {
    host: parseHost(r),
    port: r.int('PORT', 8080, 0, 65535),
    workersNum,
    dataDir: r.str('DATA_DIR', './data'),
    databaseUrl,
    poolSize: r.int('POOL_SIZE', 10, 1, 500),
    dbTimeoutMs: r.int('DB_TIMEOUT_MS', 3000, 100, 120000),
    redisUrl: r.url('REDIS_URL', ['redis:', 'rediss:'], 'redis://redis:6379', {
      // ioredis reads a database number from the path and ignores anything else there.
      rule: 'must end with the host or a database number (/0 to /15)',
      test: (p) => p === '' || p === '/' || /^\/\d{1,2}$/.test(p),
    }),
    redisPrefix: r.str('REDIS_PREFIX', 'messenger:'),
    rmqUrl,
    rmqConnectTimeoutMs: r.int('RMQ_CONNECT_TIMEOUT_MS', 10_000, 100, 600_000),
    apps,
    sessionTtlSeconds: r.int('SESSION_TTL_SECONDS', 3600, 1, 365 * 24 * 3600),
    refreshTtlSeconds: r.int('REFRESH_TTL_SECONDS', 30 * 24 * 3600, 1, 365 * 24 * 3600),
    bcryptCost: r.int('BCRYPT_COST', 10, 4, 15),
    // Per process: the workers share the cores, so by default all their threads together are one per core
    // (each thread is an isolate of 11-19 MB; one per core in every worker grew with the square of the cores).
    bcryptThreads: r.int('BCRYPT_THREADS', Math.max(1, Math.ceil(os.availableParallelism() / workersNum)), 1, 64),
    bcryptNice: r.int('BCRYPT_NICE', 10, 0, 19),
    messageMaxLength: r.int('MESSAGE_MAX_LENGTH', 16384, 1, 1_000_000),
    bodyLimitBytes: r.bytes('BODY_LIMIT', 1024 * 1024),
    requestTimeoutMs: r.int('REQUEST_TIMEOUT_MS', 30_000, 100, 600_000),
    corsOrigins: parseOrigins(r),
    logLevel: logLevel as LogLevel,
    shutdownTimeoutMs: r.int('SHUTDOWN_TIMEOUT_MS', 10000, 100, 600000),
    metricsToken,
    metricsPort: r.optional('METRICS_PORT') === undefined ? undefined : r.int('METRICS_PORT', 9464, 0, 65535),
    search: {
      queue: r.queue('SEARCH_QUEUE', 'messenger.search'),
      timeoutMs: r.int('SEARCH_TIMEOUT_MS', 5000, 10, 600000),
      taskTtlSeconds: r.int('SEARCH_TASK_TTL_SECONDS', 300, 1, 7 * 24 * 3600),
      maxAttempts: r.int('SEARCH_MAX_ATTEMPTS', 3, 1, 100),
      maxUnfinished: r.int('SEARCH_MAX_UNFINISHED', 20, 1, 10_000),
      prefetch: r.int('SEARCH_PREFETCH', 4, 1, 1000),
      inProcessConsumer: r.bool('SEARCH_IN_PROCESS_CONSUMER', rmqUrl === undefined),
    },
    throttling: {
      rpsLimit: r.int('RPS_LIMIT', 100, 1, 1_000_000),
      loginMaxFailures,
      loginMaxFailuresPerAddress,
      loginWindowSeconds: r.int('LOGIN_WINDOW_SECONDS', 900, 1, 24 * 3600),
      trustedProxies: trusted,
    },
    cache: {
      ttlSeconds: r.int('CACHE_TTL_SECONDS', 300, 1, 7 * 24 * 3600),
      chatMaxBytes: r.int('CACHE_CHAT_MAX_BYTES', 16 * 1024 * 1024, 0, 2 ** 31),
      memoryMaxBytes: r.int('CACHE_MEMORY_MAX_BYTES', 64 * 1024 * 1024, 0, 2 ** 31),
    },
    messageStorage: messageStorage as MessageStorage,
    indexCleanMs: r.int('INDEX_CLEAN_MS', 100, 0, 60_000),
    sync: {
      queue: r.queue('SYNC_QUEUE', 'messenger.sync'),
      bulkSize: r.int('SYNC_BULK_SIZE', 500, 1, 10_000),
      flushMs: r.int('SYNC_FLUSH_MS', 50, 0, 60_000),
      inProcess: r.bool('SYNC_IN_PROCESS', rmqUrl === undefined),
    },
    realtime: {
      maxPerAccount: r.int('WS_MAX_PER_ACCOUNT', 20, 1, 100_000),
      maxConnections: r.int('WS_MAX_CONNECTIONS', 10_000, 1, 1_000_000),
      maxBufferBytes: r.bytes('WS_MAX_BUFFER_BYTES', 1024 * 1024),
      pingMs: r.int('WS_PING_MS', 30_000, 50, 3_600_000),
      presenceTtlSeconds: r.int('PRESENCE_TTL_SECONDS', 45, 3, 50),
    },
  };

  if (config.workersNum > 1 && (config.databaseUrl === undefined || config.redisUrl === undefined)) {
    r.problems.push(
      'WORKERS_NUM above 1 needs DATABASE_URL and REDIS_URL: the embedded database and in-process store cannot be shared between processes',
    );
  }
  // Each queue has a dead-letter queue `<name>.dead`; the search worker and the synchronizer must not share any of them.
  const searchQueues = [config.search.queue, `${config.search.queue}.dead`];
  if ([config.sync.queue, `${config.sync.queue}.dead`].some((q) => searchQueues.includes(q))) {
    r.problems.push(
      `SEARCH_QUEUE ("${config.search.queue}") and SYNC_QUEUE ("${config.sync.queue}") must name different queues, neither the other's dead-letter queue (<name>.dead): on one queue the search worker and the synchronizer dead-letter each other's messages`,
    );
  }
  if (config.messageStorage === 'rabbitmq' && config.rmqUrl === undefined && !config.sync.inProcess) {
    r.problems.push('SYNC_IN_PROCESS=0 needs RMQ_URL: without RabbitMQ the queue lives in the web process, so its synchronizer must too');
  }
  if (r.problems.length > 0) throw new ConfigError(r.problems);
  return config;
}

/**
 * Reads `./.env` (or the file named by ENV_FILE) into the environment when
 * present; variables already set in the environment win. A file named by
 * ENV_FILE must exist: starting on the defaults instead of the settings the
 * operator pointed at (another database, another port) is worse than not
 * starting.
 */
export function loadEnvFile(env: Env = process.env): void {
  const named = env.ENV_FILE !== undefined && env.ENV_FILE !== '';
  const file = named ? (env.ENV_FILE as string) : '.env';
  if (!fs.existsSync(file)) {
    if (named) throw new ConfigError([`ENV_FILE is "${file}", which does not exist`]);
    return;
  }
  try {
    process.loadEnvFile(file);
  } catch (err) {
    // A folder or an unreadable file: node's own error ("Contents of '/etc' should be a valid string") names neither.
    const why = (err as { code?: unknown }).code === 'EISDIR' || fs.statSync(file).isDirectory() ? 'is a directory, not a file' : `cannot be read (${(err as Error).message})`;
    throw new ConfigError([`${named ? `ENV_FILE is "${file}", which` : `${file}`} ${why}`]);
  }
}

/** For an entrypoint: the configuration (after `.env`), or every problem on stderr and exit code 2. */
export function loadConfigOrExit(env: Env = process.env): Config {
  try {
    if (env === process.env) loadEnvFile(env);
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}
