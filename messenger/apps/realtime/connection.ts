import type { WebSocket } from 'ws';
import type { MessageStored } from '../../events';
import type { Session } from '../../types';
import { wsClosed, wsDeliveryLatency, wsFrames } from '../../infra/metrics';
import { messageFrame } from './frames';

/** Close codes of GET /v1/events (documented in docs/realtime.md). */
export const CLOSE = {
  goingAway: 1001,
  tryAgainLater: 1013,
  internal: 1011,
  sessionEnded: 4401,
  rateLimited: 4429,
} as const;

/**
 * Where one connection stands in one chat: the position of the last message
 * it was sent, and live events held back while the database is read
 * (resume or a gap repair), so replay and live meet without a gap or a
 * duplicate.
 */
export interface ChatCursor {
  /** Position of the last message sent on this connection; undefined before the first. */
  last?: number;
  /** True while a replay or repair reads the database; live events wait in `held`. */
  busy: boolean;
  held: MessageStored[];
  /**
   * The furthest read marker of this chat that came while messages were
   * held: sent once they were, so a post's `read` never overtakes its `message`.
   */
  read?: { chatId: string; seq: number; data: string };
  /** The database read in progress, if any. */
  running?: Promise<void>;
}

/** Most live events one chat may hold back on one connection (or a connection loading its chat list, in all) before it is closed (1013) to resume later. */
export const MAX_HELD = 10_000;
/**
 * The live messages one connection may hold back in all its chats, as a
 * multiple of WS_MAX_BUFFER_BYTES, before it is closed (1013) to resume
 * later: a replay to a peer that stopped reading waits for it, and the live
 * messages of every chat it resumed pile up meanwhile.
 */
export const HELD_BYTES_PER_BUFFER = 16;

/**
 * The client-frame allowance of one session on this process: RPS_LIMIT
 * frames per second, bursts up to it, shared by every connection of the
 * session (as the HTTP API's limit is per session, not per TCP connection).
 */
export class FrameAllowance {
  private tokens: number;
  private refilled = Date.now();

  constructor(private readonly rps: number) {
    this.tokens = rps;
  }

  /** Takes one frame from the allowance; false past it. */
  take(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** True when the allowance is whole again (nothing to remember about the session). */
  full(): boolean {
    this.refill();
    return this.tokens >= this.rps;
  }

  private refill(): void {
    const now = Date.now();
    this.tokens = Math.min(this.rps, this.tokens + ((now - this.refilled) / 1000) * this.rps);
    this.refilled = now;
  }
}

/** One open WebSocket of one session. */
export class Connection {
  /**
   * The chats this connection may read: its account's set, shared by the
   * account's connections on this process (the gateway's index). Cursors are
   * made only when a chat has traffic, so an idle connection of an account
   * with thousands of chats costs nothing per chat.
   */
  readable = new Set<string>();
  /** Cursors of the readable chats that have had traffic on this connection. */
  readonly cursors = new Map<string, ChatCursor>();
  /** Until the client's first frame (or a short grace), live messages are held so a `resume` can come first. */
  holding = true;
  /**
   * While the account's chat list is being loaded (from the accept on): the
   * position in the gateway's log of early events (kept once for all the
   * loading connections) from which this one replays, once its list is
   * known, those of its chats. Undefined once loaded.
   */
  earlyFrom: number | undefined;
  alive = true;
  closed = false;
  /**
   * Closed by the server for its own reason (events lost) with the client
   * expected back: its account's mark is left to expire rather than
   * cleared, so a reconnect within the marks' TTL is no offline/online blink.
   */
  keepsPresence = false;
  /** The approximate size of the live messages held in all this connection's cursors (see HELD_BYTES_PER_BUFFER). */
  heldBytes = 0;
  /** Per chat, the position of the last read marker sent on this connection. */
  private readonly readSent = new Map<string, number>();
  /** Client frames are handled one after another. */
  inbox: Promise<void> = Promise.resolve();
  /** Frames received and waiting in `inbox` behind the one being handled, and their bytes (bounded: see `admit`). */
  private waitingFrames = 0;
  private waitingBytes = 0;
  expiryTimer: NodeJS.Timeout | undefined;
  graceTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly ws: WebSocket,
    readonly session: Session,
    private readonly rps: number,
    private readonly maxBuffer: number,
    private readonly maxWaitingBytes: number,
    private readonly allowance: FrameAllowance = new FrameAllowance(rps),
  ) {}

  /** Most bytes of live messages this connection may hold. */
  get heldLimit(): number {
    return this.maxBuffer * HELD_BYTES_PER_BUFFER;
  }

  /** The cursor of a chat, created on first use. */
  cursor(chatId: string): ChatCursor {
    let c = this.cursors.get(chatId);
    if (c === undefined) {
      c = { busy: false, held: [] };
      this.cursors.set(chatId, c);
    }
    return c;
  }

  /** The cursor of a readable chat (made if it has none yet); undefined for a chat this connection may not read. */
  readableCursor(chatId: string): ChatCursor | undefined {
    return this.readable.has(chatId) ? this.cursor(chatId) : undefined;
  }

  /**
   * Whether a read marker at `seq` in a chat is news for this connection
   * (further than the last one sent), and if so remembers it.
   */
  readMoved(chatId: string, seq: number): boolean {
    const sent = this.readSent.get(chatId);
    if (sent !== undefined && seq <= sent) return false;
    this.readSent.set(chatId, seq);
    return true;
  }

  /** Takes one client frame from its session's allowance (RPS_LIMIT per second, bursts up to it); false past it. */
  take(): boolean {
    return this.allowance.take();
  }

  /**
   * Admits a received frame of `bytes` to wait its turn in `inbox`; false when
   * that would pass the bound (at most `rps` frames, one second's allowance,
   * and `maxWaitingBytes` bytes waiting). Frames wait while an earlier one is
   * handled, and a replay to a peer that does not read waits for it: without
   * the bound, a peer that stops reading while sending could make the server
   * keep everything it sends.
   */
  admit(bytes: number): boolean {
    if (this.waitingFrames + 1 > this.rps || this.waitingBytes + bytes > this.maxWaitingBytes) return false;
    this.waitingFrames++;
    this.waitingBytes += bytes;
    return true;
  }

  /** A frame admitted by `admit` leaves the queue (its handling starts). */
  dequeued(bytes: number): void {
    this.waitingFrames--;
    this.waitingBytes -= bytes;
  }

  /**
   * Sends a frame unless the peer is not reading: a connection whose unsent
   * bytes would pass the limit is dropped rather than buffered (the client
   * reconnects and resumes). Returns false when nothing was sent.
   */
  send(data: string, type: string, counted = true): boolean {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return false;
    if (this.ws.bufferedAmount > this.maxBuffer) {
      this.drop('slow-consumer');
      return false;
    }
    this.ws.send(data);
    // A live fan-out counts its frames once for all connections (see Gateway.onMessage).
    if (counted) wsFrames.inc({ direction: 'out', type });
    return true;
  }

  /** Sends one message (live or replayed) and records how long after its creation it left. */
  sendMessage(m: MessageStored, path: 'live' | 'replay', data = messageFrame(m)): void {
    if (this.send(data, 'message')) wsDeliveryLatency.observe({ path }, Math.max(0, (Date.now() - Date.parse(m.createdAt)) / 1000));
  }

  /** True while the unsent frames are at a quarter of WS_MAX_BUFFER_BYTES or more: replays and drains wait (`flushed`) before writing more. */
  get pressed(): boolean {
    return !this.closed && this.ws.bufferedAmount >= this.maxBuffer / 4;
  }

  /**
   * Resolves once the frames queued so far have left this process (or the
   * socket closed): replays wait on it so a large replay never piles up in
   * memory ahead of a slow reader.
   */
  flushed(): Promise<void> {
    if (!this.pressed) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (!this.pressed) resolve();
        else setTimeout(check, 5);
      };
      check();
    });
  }

  /** True once the connection is closing or closed: its frames are no longer handled. */
  get ending(): boolean {
    return this.closed || this.ws.readyState !== this.ws.OPEN;
  }

  /** Closes with a code the client acts on (4401: log in again, 4429: slow down, 1001/1013: reconnect and resume). */
  close(code: number, reason: string): void {
    // Once closing, a further reason to close changes nothing (and is not counted again).
    if (this.ending) return;
    wsClosed.inc({ reason });
    this.ws.close(code, reason);
    // A peer that does not answer the close handshake is cut.
    setTimeout(() => this.ws.terminate(), 1000).unref();
  }

  /** Cuts the connection at once (dead peer, a peer that does not read). */
  drop(reason: string): void {
    if (this.closed) return;
    wsClosed.inc({ reason });
    this.ws.terminate();
  }
}
