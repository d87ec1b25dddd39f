// The real-time connection: GET /v1/events over WebSocket with a one-use
// ticket, reconnecting with backoff; while it is down the store polls.
import { computed, reactive, watch } from 'vue';
import { api, ApiError, endedWords, network, refresh, sessionGeneration, signOut } from './api';

/**
 * `live`: frames arrive over the socket; `polling`: the socket is down or the
 * server has none. `events`: false once the server answered that it has no
 * real-time endpoint. Whether the server answers at all is `network.reachable`.
 */
export const connection = reactive({ state: 'off' as 'off' | 'connecting' | 'live' | 'polling', events: true });

/**
 * The server does not answer (connection refused, no network) and no socket is
 * open: the header says "Offline, reconnecting…" and presence is unknown.
 */
export const offline = computed(() => !network.reachable && connection.state !== 'live' && connection.state !== 'off');

/** A frame from the server; fields are checked by whoever reads them. */
export type Frame = Record<string, unknown> & { type?: unknown };

interface Handlers {
  frame(f: Frame): void;
  /** The socket is open: send `resume`, then anything not yet acknowledged. */
  opened(): void;
}

let handlers: Handlers | undefined;
let socket: WebSocket | undefined;
let attempt = 0;
let timer: ReturnType<typeof setTimeout> | undefined;
let running = false;
/** A ticket request is under way: a second connect() would open a second socket. */
let opening = false;

function backoff(): number {
  const base = Math.min(30_000, 500 * 2 ** attempt);
  attempt += 1;
  return base / 2 + Math.random() * (base / 2);
}

function schedule(ms: number): void {
  clearTimeout(timer);
  if (running) timer = setTimeout(() => void connect(), ms);
}

async function connect(): Promise<void> {
  if (!running || socket !== undefined || opening) return;
  connection.state = 'connecting';
  const generation = sessionGeneration();
  let ticket: string;
  opening = true;
  try {
    ticket = (await api<{ ticket: string }>('POST', '/v1/events/ticket')).ticket;
    connection.events = true;
  } catch (err) {
    connection.state = 'polling';
    // No real-time endpoint on this server (yet): poll, and look again now and then.
    if (err instanceof ApiError && err.code === 'not-found') {
      connection.events = false;
      schedule(60_000);
    } else if (running) schedule(backoff());
    return;
  } finally {
    opening = false;
  }
  if (!running) return;
  // Signed out and in again (or refreshed) while the ticket was on its way: a
  // connect() meanwhile did nothing, and this ticket is of an ended session
  // (its socket would be refused, 401). Ask again with the session in use now.
  if (generation !== sessionGeneration()) {
    void connect();
    return;
  }
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${proto}//${location.host}/v1/events?ticket=${encodeURIComponent(ticket)}`);
  socket = ws;
  ws.onopen = () => {
    attempt = 0;
    connection.state = 'live';
    handlers?.opened();
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== 'string') return;
    let frame: unknown;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (typeof frame === 'object' && frame !== null) handlers?.frame(frame as Frame);
  };
  ws.onclose = (ev) => {
    if (socket === ws) socket = undefined;
    if (!running) return;
    connection.state = 'polling';
    if (ev.code === 4401) {
      // Our own refresh ended the session this socket was opened with: reconnect with the new one, no second refresh.
      if (generation !== sessionGeneration()) {
        schedule(0);
        return;
      }
      // The session ended (logout elsewhere, password change, expiry): a refresh may bring a new one
      // (one already under way, for instance ours, is joined rather than repeated).
      void refresh().then((ok) => {
        if (ok) schedule(0);
        else signOut(endedWords('You were signed out.'));
      });
      return;
    }
    schedule(backoff());
  };
}

/** Starts the connection (idempotent). */
export function startRealtime(h: Handlers): void {
  handlers = h;
  if (running) return;
  running = true;
  attempt = 0;
  void connect();
}

/** Closes the connection and stops reconnecting. */
export function stopRealtime(): void {
  running = false;
  clearTimeout(timer);
  const ws = socket;
  socket = undefined;
  ws?.close(1000);
  connection.state = 'off';
  connection.events = true;
}

/** Sends a frame when the socket is open; false otherwise (the caller falls back to HTTP). */
export function sendFrame(frame: object): boolean {
  if (socket === undefined || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

/** Tries to connect at once instead of waiting out the backoff (which grows to 30 s during an outage). */
function reconnectNow(): void {
  if (running && socket === undefined && !opening && connection.events) {
    attempt = 0;
    schedule(0);
  }
}

// Back online: the browser says so, or the server answered a request (a poll) again.
window.addEventListener('online', reconnectNow);
watch(
  () => network.reachable,
  (up) => {
    if (up) reconnectNow();
  },
);
