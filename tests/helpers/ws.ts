import type http from 'node:http';
import { WebSocket } from 'ws';

/** A server frame as received. */
export type Frame = Record<string, unknown> & { type: string };

/** A WebSocket client on GET /v1/events that records every frame and how it closed. */
export class TestSocket {
  readonly frames: Frame[] = [];
  closeCode: number | undefined;
  /** The reason text of the close frame received. */
  closeReason: string | undefined;
  readonly closed: Promise<number>;
  private readonly waiters = new Set<() => void>();

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      this.frames.push(JSON.parse((data as Buffer).toString('utf8')) as Frame);
      for (const w of this.waiters) w();
    });
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        this.closeCode = code;
        this.closeReason = reason.toString('utf8');
        for (const w of this.waiters) w();
        resolve(code);
      }),
    );
    ws.on('error', () => undefined);
  }

  /** Frames of one type (all of them, in arrival order). */
  of(type: string): Frame[] {
    return this.frames.filter((f) => f.type === type);
  }

  /** `message` frames of one chat, as text. */
  texts(chatId: string): string[] {
    return this.of('message').filter((f) => f.chat_id === chatId).map((f) => f.text as string);
  }

  sendJson(frame: unknown): void {
    this.ws.send(JSON.stringify(frame));
  }

  /** Waits until `test` holds for the frames received (or the socket closed, when `orClose`); fails after `ms`. */
  async until(what: string, test: () => boolean, ms = 10_000): Promise<void> {
    if (test()) return;
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      const check = () => {
        if (test()) done();
      };
      const timer = setTimeout(() => done(new Error(`timed out waiting for ${what}; got ${this.frames.length} frames, close ${this.closeCode}: ${JSON.stringify(this.frames.slice(-3)).slice(0, 500)}`)), ms);
      this.waiters.add(check);
    });
  }

  /** The next frame matching `test` that arrives after `after` frames already seen. */
  async next(test: (f: Frame) => boolean, ms = 10_000, after = 0): Promise<Frame> {
    let found: Frame | undefined;
    await this.until('a frame', () => (found = this.frames.slice(after).find(test)) !== undefined, ms);
    return found as Frame;
  }

  /** Stops (true) or resumes (false) reading from the TCP socket: a client that does not read. */
  pauseReading(paused: boolean): void {
    const socket = (this.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    if (paused) socket.pause();
    else socket.resume();
  }

  close(): Promise<number> {
    this.ws.close(1000);
    return this.closed;
  }
}

export interface OpenOptions {
  session?: string;
  ticket?: string;
  headers?: Record<string, string>;
  /** ws client options (for example autoPong: false to play a dead peer). */
  options?: ConstructorParameters<typeof WebSocket>[2];
}

function url(port: number, ticket?: string): string {
  return `ws://127.0.0.1:${port}/v1/events${ticket === undefined ? '' : `?ticket=${ticket}`}`;
}

function headersOf(o: OpenOptions): Record<string, string> {
  return { ...(o.session === undefined ? {} : { Authorization: `session_id ${o.session}` }), ...(o.headers ?? {}) };
}

/** Opens a socket; rejects with the refusal (status and body) when the upgrade is refused. */
export function openSocket(port: number, o: OpenOptions): Promise<TestSocket> {
  const ws = new WebSocket(url(port, o.ticket), { headers: headersOf(o), ...(o.options ?? {}) });
  const socket = new TestSocket(ws);
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(socket));
    ws.once('unexpected-response', (_req, res) => {
      void readRefusal(res).then((r) => reject(Object.assign(new Error(`refused ${r.status} ${JSON.stringify(r.body)}`), r)));
    });
    ws.once('error', reject);
  });
}

/** A refused upgrade: its HTTP status, JSON body and headers. */
export interface Refusal {
  status: number;
  body: unknown;
  headers: http.IncomingHttpHeaders;
}

async function readRefusal(res: http.IncomingMessage): Promise<Refusal> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // left as text: the test fails on it
  }
  return { status: res.statusCode ?? 0, body, headers: res.headers };
}

/** Tries to open a socket that must be refused; returns the refusal. */
export async function refused(port: number, o: OpenOptions): Promise<Refusal> {
  try {
    const s = await openSocket(port, o);
    await s.close();
  } catch (err) {
    const r = err as Partial<Refusal>;
    if (typeof r.status === 'number') return r as Refusal;
    throw err;
  }
  throw new Error('the upgrade was accepted');
}

/** Opens a socket and sends `resume` for these chats (iterator: last message seen, or all-zero). */
export async function openResumed(port: number, session: string, chats: Record<string, string>): Promise<TestSocket> {
  const s = await openSocket(port, { session });
  s.sendJson({ type: 'resume', chats });
  return s;
}

export const ZERO = '0'.repeat(32);
