import { createHash, randomBytes } from 'node:crypto';
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { AppError, BadRequest, ServiceUnavailable, TooManyRequests, Unauthorized } from '../../errors';
import { refuseUpgrade as refuse, refuseUpgradeFor } from '../../http/upgrade';
import type { App, AppFactory, AppModule, Session, UpgradeAdmission, UpgradeHandler } from '../../types';
import { SessionStore } from '../auth/sessions';
import { authorizationOf } from '../../http/authorization';
import { Gateway } from './gateway';

/** A ticket opens one WebSocket, within this many seconds of being issued. */
export const TICKET_TTL_SECONDS = 30;

/** Where a ticket is kept: only its SHA-256, so a store dump opens nothing. */
export function ticketKey(ticket: string): string {
  return `ticket:${createHash('sha256').update(ticket).digest('hex')}`;
}

/**
 * Whether a browser page from `origin` may open the socket: the page's own
 * origin (its host equal to the Host the request was sent to) and any origin
 * listed in CORS_ORIGINS. Requests without an
 * Origin header do not come from a browser page and are not limited.
 */
export function originAllowed(origin: string | undefined, host: string | undefined, allowed: readonly string[]): boolean {
  if (origin === undefined) return true;
  if (allowed.includes(origin.replace(/\/$/, ''))) return true;
  // The page this service itself serves (the web client) is always of the same origin.
  try {
    return host !== undefined && new URL(origin).host.toLowerCase() === host.toLowerCase();
  } catch {
    return false;
  }
}

/** A Sec-WebSocket-Key as RFC 6455 makes it (16 random bytes in base64), as ws checks it. */
const WS_KEY = /^[+/0-9A-Za-z]{22}==$/;

/**
 * Why an upgrade request is not a WebSocket handshake ws would take: 405 for
 * a method other than GET (with Allow), 400 bad-parameters for an `Upgrade`
 * other than websocket (swagger.yml: as without one), a missing or malformed
 * Sec-WebSocket-Key, or a version other than 13 (or 8).
 */
export function handshakeProblem(req: http.IncomingMessage): { status: number; code: string; headers?: Record<string, string> } | undefined {
  // GET is the only method of /v1/events (swagger.yml).
  if (req.method !== 'GET') return { status: 405, code: 'method-not-allowed', headers: { Allow: 'GET' } };
  if (req.headers.upgrade?.toLowerCase() !== 'websocket') return { status: 400, code: 'bad-parameters' };
  const key = req.headers['sec-websocket-key'];
  if (key === undefined || !WS_KEY.test(key)) return { status: 400, code: 'bad-parameters' };
  const version = req.headers['sec-websocket-version'];
  if (version !== '13' && version !== '8') return { status: 400, code: 'bad-parameters', headers: { 'Sec-WebSocket-Version': '13, 8' } };
  return undefined;
}

/**
 * Real time: GET /v1/events upgrades to a WebSocket carrying every message,
 * join, read marker and presence change the account may see (see
 * docs/realtime.md), and POST /v1/events/ticket issues the one-use ticket
 * browsers open it with.
 */
const realtimeApp: AppFactory = (deps): App => {
  const { config, db, kv, log, events } = deps;
  const sessions = new SessionStore(db, kv, events, config.sessionTtlSeconds, config.refreshTtlSeconds);
  const gateway = new Gateway(deps, (tokenHash) => sessions.resolveHash(tokenHash));
  const wss = new WebSocketServer({
    noServer: true,
    // A frame over BODY_LIMIT closes the connection with 1009.
    maxPayload: config.bodyLimitBytes,
    perMessageDeflate: false,
    clientTracking: false,
  });
  // Whatever ws still refuses after handshakeProblem (a malformed Sec-WebSocket-Protocol) gets the API's error body too.
  wss.on('wsClientError', (_err: Error, socket: Duplex) => refuse(socket, 400, 'bad-parameters'));
  // The 101 carries the X-RateLimit-* headers of its upgrade request, as every throttled answer does.
  const rateHeaders = new WeakMap<http.IncomingMessage, Record<string, string>>();
  wss.on('headers', (lines: string[], req: http.IncomingMessage) => {
    for (const [name, value] of Object.entries(rateHeaders.get(req) ?? {})) lines.push(`${name}: ${value}`);
  });

  /** The session an upgrade request opens: by one-use ticket, or by the Authorization header. */
  async function authenticate(req: http.IncomingMessage, ticket: string | null): Promise<Session> {
    // Several Authorization headers are refused even beside a ticket: the request is ambiguous either way.
    const header = authorizationOf(req);
    if (ticket === null) return sessions.resolve(header);
    if (!/^[0-9a-f]{32}$/.test(ticket)) throw new Unauthorized('auth-failed');
    // Taken and deleted in one step: of two upgrades racing with one ticket, one wins.
    const tokenHash = await kv.take(ticketKey(ticket));
    if (tokenHash === null) throw new Unauthorized('auth-failed');
    return sessions.resolveHash(tokenHash);
  }

  async function handle(req: http.IncomingMessage, socket: Duplex, head: Buffer, url: URL, admit: Parameters<UpgradeHandler>[3]): Promise<void> {
    if (gateway.closing) return refuse(socket, 503, 'service-unavailable');
    // Not a WebSocket handshake: answered as the API answers (ws would send
    // text/html), and before authentication, so no ticket is spent on it.
    const problem = handshakeProblem(req);
    if (problem !== undefined) return refuse(socket, problem.status, problem.code, problem.headers);
    const origin = req.headers.origin;
    if (!originAllowed(origin, req.headers.host, config.corsOrigins)) {
      return refuse(socket, 403, 'origin-not-allowed');
    }
    // The instance is full (WS_MAX_CONNECTIONS): refused before anything is
    // looked up or a ticket spent; the client tries again (another instance).
    if (gateway.size >= config.realtime.maxConnections) return refuse(socket, 503, 'service-unavailable', { 'Retry-After': '1' });
    let admission: UpgradeAdmission | undefined;
    let session: Session;
    try {
      // Counted like every API request (RPS_LIMIT), before the session is looked up:
      // made-up session ids and tickets cost a lookup each.
      admission = await admit(req);
      if (admission.refused !== undefined) throw admission.refused;
      session = await authenticate(req, url.searchParams.get('ticket'));
    } catch (err) {
      // Refusals and a store that does not answer (503) alike, as the HTTP API answers them.
      return refuseUpgradeFor(socket, err, admission, log);
    }
    if (socket.destroyed) return;
    if (gateway.countFor(session.accountId) >= config.realtime.maxPerAccount) {
      return refuseUpgradeFor(socket, new TooManyRequests('request-limit-exceeded', 1), admission, log);
    }
    // Again after the awaits above (other upgrades were accepted meanwhile); from here to the accept nothing waits.
    if (gateway.size >= config.realtime.maxConnections) {
      return refuseUpgradeFor(socket, new ServiceUnavailable(1), admission, log);
    }
    rateHeaders.set(req, admission.headers);
    wss.handleUpgrade(req, socket, head, (ws) => gateway.accept(ws, session));
  }

  return {
    name: 'realtime',
    requires: ['auth', 'messages'],
    middleware: {},
    handlers: {
      async createEventsTicket(ctx) {
        const session = ctx.state.session;
        if (session === undefined) throw new Unauthorized('auth-failed');
        const ticket = randomBytes(16).toString('hex');
        await kv.set(ticketKey(ticket), session.tokenHash, TICKET_TTL_SECONDS);
        ctx.status = 201;
        ctx.body = { ticket };
      },

      async openEvents() {
        // Reached only without an `Upgrade: websocket` header (upgrades never enter Koa).
        throw new BadRequest();
      },
    },
    upgrade(req, socket, head, admit) {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname !== '/v1/events') return false;
      socket.on('error', () => undefined);
      handle(req, socket, head, url, admit).catch((err: unknown) => {
        log.error({ err }, 'real-time upgrade failed');
        if (!socket.destroyed) refuse(socket, 500, err instanceof AppError ? err.code : 'internal-error');
      });
      return true;
    },
    closeUpgrades: () => gateway.closeAll(),
    async start() {
      gateway.start();
    },
    async stop() {
      await gateway.stop();
      wss.close();
    },
  };
};

/** The realtime app. */
export const app: AppModule = { name: 'realtime', create: realtimeApp };
