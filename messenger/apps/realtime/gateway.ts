/**
 * The real-time gateway of one process: its open connections, indexed by
 * account, chat and session, and the domain events fanned out to them. One
 * subscription per process; each event is serialised once and written to the
 * connections it concerns.
 *
 * Order per connection and chat: every message carries its chat position
 * (`seq`). A connection remembers the last position it was sent; a live event
 * right after it is sent at once, an older one is dropped, and one further
 * ahead (a pub/sub event lost or overtaken) makes the connection read what is
 * missing from the database first, holding live events meanwhile. `resume`
 * is the same reading, from the client's iterator.
 */
import type { WebSocket } from 'ws';
import type { MemberJoined, MessageStored, PresenceChanged, ReadMoved, SessionEnded } from '../../events';
import { messagesAfter, resumeReplays, seqOfMessage, type SeqMessageRow } from '../../db/messages';
import { chatOwner, identitiesOf, readableChats } from '../../db/members';
import { AppError, toWireError } from '../../errors';
import { describeFailure } from '../../infra/errors';
import { parseId, toWireId, ZERO_ID } from '../../ids';
import { wsClosed, wsConnections, wsDeliveryLatency, wsFrames } from '../../infra/metrics';
import type { Deps, Session } from '../../types';
import { postMessage } from '../messages/post';
import { CLOSE, Connection, FrameAllowance, MAX_HELD, type ChatCursor } from './connection';
import { frame, messageFrame, parseClientFrame, storedFromRow, type ClientFrame, type ResumeFrame, type SendFrame } from './frames';

/**
 * An event kept for the connections loading their chat lists: delivers
 * itself to `conn` for the chats `missed` answers true for (in its list, and
 * not indexed for it yet when the event came, so not delivered then).
 */
type EarlyEvent = (conn: Connection, missed: (chatId: string) => boolean) => void;

/** A read marker with its position (found from the message when the event came without it). */
type PlacedRead = ReadMoved & { seq: number };

/** Messages after a connection's position in a chat, with the chat's last position (read by a resume or a repair). */
type Replay = { rows: SeqMessageRow[]; lastSeq: number };

/** Most messages a resume or repair replays for one chat; past it the client is told to page (`reset`). */
export const REPLAY_MAX = 1000;
/**
 * Chats of a `resume` read by one statement: each brings up to REPLAY_MAX + 1
 * messages, so this bounds what one statement holds in memory (a resume of
 * 1,000 busy chats is 20 statements, not one of a million rows).
 */
const RESUME_READ_CHATS = 50;
/** How long live messages wait for the client's first frame (a `resume`) before flowing. */
const FIRST_FRAME_GRACE_MS = 500;
/** How long what was said about an account's presence is remembered (a repeat after that costs one duplicate frame). */
const PRESENCE_SAID_MS = 5 * 60_000;
/** A presence change that could not be told (the store or the database did not answer) is tried again after this long. */
const PRESENCE_RETELL_MS = 1000;
/**
 * How often each instance looks for accounts whose marks all expired without
 * a close (their instance died): announced offline at most
 * PRESENCE_TTL_SECONDS (default 45, at most 50) + 5 s after the death (SPEC:
 * within 60 s). Marks are renewed every third of their TTL.
 */
const PRESENCE_SWEEP_MS = 5_000;
/** Most accounts one sweep announces offline (the next sweep takes the rest). */
const PRESENCE_SWEEP_MAX = 1000;
/**
 * Most frames the early events kept for loading connections may carry in
 * all (a presence change carries one per chat of the account): past it, or
 * past MAX_HELD events for a connection, the oldest loading connections are
 * closed (1013) to resume later, so what is kept stays bounded.
 */
const EARLY_MAX_FRAMES = 100_000;
/** Chats whose creator is remembered (creators never change). */
const OWNER_CACHE_MAX = 50_000;
/** The seq of a no_storage message: delivered live only, never stored (docs/storage-modes.md). */
const UNORDERED = 0;
/**
 * How long the token hashes of ended sessions are remembered: an upgrade
 * that read its session just before the end, and is accepted only after the
 * `session.ended` event came, is closed at once rather than at the next ping.
 */
const ENDED_KEPT_MS = 60_000;
/** Longest timer Node accepts. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function add<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  let set = map.get(key);
  if (set === undefined) {
    set = new Set();
    map.set(key, set);
  }
  set.add(value);
}

function remove<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}

export class Gateway {
  private readonly byAccount = new Map<string, Set<Connection>>();
  /** The accounts indexed under each chat (their connections are in `byAccount`). */
  private readonly byChat = new Map<string, Set<string>>();
  /**
   * The chats each account connected here may read, one set shared by all
   * its connections (`Connection.readable`): an account's chats cost the
   * process one entry each, not one per chat and connection (20 idle sockets
   * of an account with 20,000 chats held 136 MB).
   */
  private readonly accountChats = new Map<string, Set<string>>();
  private readonly bySession = new Map<string, Set<Connection>>();
  /**
   * Each session's client-frame allowance, shared by its connections here (so
   * 20 sockets of one session do not get 20 times RPS_LIMIT). Kept after its
   * last connection closes until it is whole again, so closing and reopening
   * does not refill it.
   */
  private readonly allowances = new Map<string, FrameAllowance>();
  /**
   * Connections whose account's chat list is being loaded: they are not
   * indexed by chat yet (see `keepEarly`). In accept order, so the first has
   * the oldest `earlyFrom`.
   */
  private readonly loading = new Set<Connection>();
  /**
   * The events that came while any connection was loading its chat list,
   * kept once for all of them (each connection replays from its own
   * `earlyFrom`); `earlyBase` is the position of the first. Trimmed as the
   * oldest loading connection finishes. Until 2026-12-07 each loading
   * connection kept its own copy of every event, and a presence change one
   * per chat of the account.
   */
  private early: { deliver: EarlyEvent; frames: number }[] = [];
  private earlyBase = 0;
  /** The frames the kept early events carry, in all (see EARLY_MAX_FRAMES). */
  private earlyFrames = 0;
  /**
   * For each account with connections loading here: how many, and at which
   * log position each chat was indexed for it meanwhile (an early event of a
   * chat indexed before it came was delivered then, not kept).
   */
  private readonly earlyIndexed = new Map<string, { loading: number; at: Map<string, number> }>();
  private readonly owners = new Map<string, string | null>();
  /** Events of a chat whose creator is being looked up wait here, in order. */
  private readonly chains = new Map<string, Promise<void>>();
  /** Each account's presence changes (open, close) run one after another here. */
  private readonly presenceSteps = new Map<string, Promise<void>>();
  /** Each account's `presence.changed` events are told one after another here. */
  private readonly presenceTells = new Map<string, Promise<void>>();
  /** What this process last told its connections about an account's presence (kept PRESENCE_SAID_MS). */
  private readonly presenceSaid = new Map<string, { online: boolean; at: number }>();
  /** Accounts whose presence change could not be told, each with its timer to try again (one per account). */
  private readonly presenceRetells = new Map<string, NodeJS.Timeout>();
  /** Sessions whose `session.ended` came lately (token hash → when), kept ENDED_KEPT_MS. */
  private readonly endedSessions = new Map<string, number>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly undo: (() => void)[] = [];
  /** Connections accepted and not closed yet (see `size`). */
  private open = 0;
  closing = false;

  /**
   * @param verify throws a 401 AppError when the session (by token hash) no
   *   longer works: checked for every open session at each ping, so a session
   *   whose `session.ended` event was lost (Redis away) still closes its sockets.
   */
  constructor(
    private readonly deps: Deps,
    private readonly verify: (tokenHash: string) => Promise<unknown>,
  ) {}

  /** Open connections on this process (all accounts; those closing until they closed). */
  get size(): number {
    return this.open;
  }

  /** Open connections of an account on this process. */
  countFor(accountId: string): number {
    return this.byAccount.get(accountId)?.size ?? 0;
  }

  /** Subscribes to the domain events and starts the ping and presence timers. */
  start(): void {
    const { events, config, log } = this.deps;
    this.undo.push(
      events.subscribe('message.stored', (e) => this.onMessage(e)),
      events.subscribe('member.joined', (e) => this.onMember(e)),
      events.subscribe('read.moved', (e) => this.onRead(e)),
      events.subscribe('session.ended', (e) => this.onSessionEnded(e)),
      events.subscribe('presence.changed', (e) => this.onPresence(e)),
      events.onGap(() => this.eventsLost()),
    );
    this.timers.push(setInterval(() => this.ping(), config.realtime.pingMs));
    this.timers.push(
      setInterval(() => {
        const accounts = [...this.byAccount.keys()];
        this.deps.presence
          .heartbeat(events.origin, accounts)
          .then((back) =>
            Promise.all([
              // An account whose last tab here closed while the renewal was on its way has just been marked again.
              ...accounts.filter((a) => this.countFor(a) === 0).map((a) => this.depart(a)),
              ...this.cameBack(back),
            ]),
          )
          .catch((err: unknown) => log.warn({ err: describeFailure(err).reason }, 'presence heartbeat failed'));
      }, (config.realtime.presenceTtlSeconds * 1000) / 3),
    );
    this.timers.push(setInterval(() => void this.sweepPresence(), PRESENCE_SWEEP_MS));
    for (const t of this.timers) t.unref();
  }

  /** Closes every connection with 1001 and waits (at most a second) for them to go. */
  async closeAll(): Promise<void> {
    this.closing = true;
    const all = [...this.bySession.values()].flatMap((s) => [...s]);
    const gone = all.map((c) => new Promise<void>((resolve) => (c.closed ? resolve() : c.ws.once('close', () => resolve()))));
    for (const c of all) c.close(CLOSE.goingAway, 'server-shutdown');
    // Nobody stays "online" on a process that is going away: its marks go now, and the
    // accounts left with none anywhere are announced offline (not after the marks' TTL).
    const departed = Promise.all([...this.byAccount.keys()].map((a) => this.depart(a)));
    await Promise.race([Promise.all([...gone, departed]), new Promise((r) => setTimeout(r, 1000).unref())]);
    for (const c of all) c.drop('server-shutdown');
  }

  /**
   * The events of the time this process was not subscribed (a Redis restart
   * or a cut connection) never came: a chat that stays quiet would never
   * repair its gap, and joins, read markers and presence changes have no
   * repair at all. So every connection open now is closed with 1013: its
   * client reconnects and resumes, and reloads what it shows (before, the
   * sockets stayed open and were never told).
   */
  private eventsLost(): void {
    // What this process said about presence may be stale too: say it again on the next change.
    this.presenceSaid.clear();
    for (const set of this.bySession.values()) {
      for (const conn of set) {
        // Its client comes back at once: the account stays online meanwhile
        // (its mark expires within the TTL if it does not, and the sweep
        // says so). Until 2026-12-07 every account with no tab elsewhere was
        // announced offline, then online again a moment later.
        if (!conn.ending) conn.keepsPresence = true;
        conn.close(CLOSE.tryAgainLater, 'events-lost');
      }
    }
  }

  /** Stops timers and subscriptions (connections are closed by closeAll). */
  async stop(): Promise<void> {
    await this.closeAll();
    for (const t of this.timers.splice(0)) clearInterval(t);
    for (const t of this.presenceRetells.values()) clearTimeout(t);
    this.presenceRetells.clear();
    for (const u of this.undo.splice(0)) u();
  }

  /** Takes over an accepted WebSocket of `session`. */
  accept(ws: WebSocket, session: Session): void {
    const { config, log } = this.deps;
    // Its upgrade read the session before it ended, and the end's event came
    // before this: closed at once (until 2026-12-07 it stayed open until the
    // next ping, up to WS_PING_MS).
    const ended = this.endedSessions.get(session.tokenHash);
    if (ended !== undefined) {
      ws.on('error', () => undefined);
      wsClosed.inc({ reason: 'session-ended' });
      ws.close(CLOSE.sessionEnded, 'session-ended');
      setTimeout(() => ws.terminate(), 1000).unref();
      return;
    }
    let allowance = this.allowances.get(session.tokenHash);
    if (allowance === undefined) {
      allowance = new FrameAllowance(config.throttling.rpsLimit);
      this.allowances.set(session.tokenHash, allowance);
    }
    const conn = new Connection(ws, session, config.throttling.rpsLimit, config.realtime.maxBufferBytes, config.bodyLimitBytes, allowance);
    const first = this.countFor(session.accountId) === 0;
    let readable = this.accountChats.get(session.accountId);
    if (readable === undefined) {
      readable = new Set();
      this.accountChats.set(session.accountId, readable);
    }
    conn.readable = readable;
    add(this.byAccount, session.accountId, conn);
    add(this.bySession, session.tokenHash, conn);
    this.loading.add(conn);
    conn.earlyFrom = this.earlyEnd;
    const tracked = this.earlyIndexed.get(session.accountId);
    if (tracked === undefined) this.earlyIndexed.set(session.accountId, { loading: 1, at: new Map() });
    else tracked.loading++;
    this.open++;
    wsConnections.inc();
    if (session.expiresAt !== undefined) {
      const left = session.expiresAt - Date.now();
      conn.expiryTimer = setTimeout(() => conn.close(CLOSE.sessionEnded, 'session-expired'), Math.min(Math.max(0, left), MAX_TIMER_MS));
    }
    ws.on('pong', () => {
      conn.alive = true;
    });
    ws.on('error', () => undefined);
    ws.on('close', () => this.closed(conn));
    // Frames are read from the start (so none is lost) but handled once the chat list is loaded.
    ws.on('message', (data, isBinary) => {
      wsFrames.inc({ direction: 'in', type: isBinary ? 'binary' : 'text' });
      // Frames that arrive after the server started closing are not handled (nor kept).
      if (conn.ending) return;
      if (!conn.take()) {
        conn.close(CLOSE.rateLimited, 'rate-limited');
        return;
      }
      const bytes = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer | ArrayBuffer).byteLength;
      if (!conn.admit(bytes)) {
        conn.close(CLOSE.rateLimited, 'inbox-full');
        return;
      }
      const text = isBinary ? undefined : (Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer)).toString('utf8');
      conn.inbox = conn.inbox.then(() => {
        conn.dequeued(bytes);
        return this.onFrame(conn, text);
      }).catch((err: unknown) => {
        log.error({ err }, 'real-time frame failed');
        conn.close(CLOSE.internal, 'internal-error');
      });
    });
    conn.inbox = this.load(conn, first);
  }

  /**
   * Indexes the connection under every chat its account may read, and marks
   * the account online. The events that came while the list was read take
   * the normal path then, for the chats in it; the first-frame grace starts.
   */
  private async load(conn: Connection, first: boolean): Promise<void> {
    const { db, presence, events, log } = this.deps;
    const accountId = conn.session.accountId;
    let chats: string[];
    try {
      chats = await readableChats(db, accountId);
    } catch (err) {
      this.loaded(conn);
      log.warn({ err: describeFailure(err).reason }, 'could not load the chats of a real-time connection');
      conn.close(CLOSE.tryAgainLater, 'service-unavailable');
      return;
    }
    if (conn.closed) return;
    for (const c of chats) this.index(accountId, toWireId(c));
    // In the same turn as the indexing: an event comes either before (kept) or after (indexed).
    this.replayEarly(conn);
    this.loaded(conn);
    conn.graceTimer = setTimeout(() => this.release(conn), FIRST_FRAME_GRACE_MS);
    if (!first) return;
    await this.presenceStep(accountId, 'presence not recorded', async () => {
      // The account's connections here may all have closed meanwhile (a tab
      // closed within ms of opening): then there is nothing to mark, and the
      // close's step, queued after this one, clears what this one set.
      if (this.countFor(accountId) === 0) return;
      // Marked and asked in one step: of two instances an account reaches at
      // once, exactly one sees it come online.
      const cameOnline = await presence.arrive(events.origin, accountId);
      if (cameOnline && this.countFor(accountId) > 0) await events.publish('presence.changed', { accountId, online: true });
    });
  }

  /**
   * Runs one presence change of an account after the previous one on this
   * process: an open's mark and its `online` frame can then never land after
   * the removal and the `offline` frame of a close that came later.
   */
  private presenceStep(accountId: string, failure: string, step: () => Promise<void>): Promise<void> {
    return this.inTurn(this.presenceSteps, accountId, failure, step);
  }

  /** Runs `step` after the one queued before it under `key` in `queue`; a failure is logged and ends only that step. */
  private inTurn(queue: Map<string, Promise<void>>, key: string, failure: string, step: () => Promise<void>): Promise<void> {
    const next = (queue.get(key) ?? Promise.resolve())
      .then(step)
      .catch((err: unknown) => this.deps.log.warn({ err: describeFailure(err).reason }, failure))
      .finally(() => {
        if (queue.get(key) === next) queue.delete(key);
      });
    queue.set(key, next);
    return next;
  }

  /** The log position the next early event takes. */
  private get earlyEnd(): number {
    return this.earlyBase + this.early.length;
  }

  /** Delivers to a connection whose chat list was just indexed the early events it missed, in arrival order. */
  private replayEarly(conn: Connection): void {
    const from = conn.earlyFrom;
    if (from === undefined) return;
    const at = this.earlyIndexed.get(conn.session.accountId)?.at;
    const end = this.earlyEnd;
    for (let i = Math.max(from, this.earlyBase); i < end; i++) {
      // Indexed after this event came (by this load, or a join meanwhile): the event was not delivered then.
      const missed = (chatId: string) => conn.readable.has(chatId) && (at?.get(chatId) ?? -1) > i;
      this.early[i - this.earlyBase].deliver(conn, missed);
    }
  }

  /** Ends the loading of a connection's chat list (loaded, failed or closed): forgets what only it still needed. */
  private loaded(conn: Connection): void {
    if (conn.earlyFrom === undefined) return;
    conn.earlyFrom = undefined;
    this.loading.delete(conn);
    const accountId = conn.session.accountId;
    const tracked = this.earlyIndexed.get(accountId);
    if (tracked !== undefined && --tracked.loading === 0) this.earlyIndexed.delete(accountId);
    this.trimEarly();
  }

  /** Drops the early events no loading connection needs any more. */
  private trimEarly(): void {
    const first = this.loading.values().next().value;
    const keepFrom = first?.earlyFrom ?? this.earlyEnd;
    if (keepFrom <= this.earlyBase) return;
    for (const e of this.early.splice(0, keepFrom - this.earlyBase)) this.earlyFrames -= e.frames;
    this.earlyBase = keepFrom;
  }

  /**
   * Keeps an event for the connections still loading their chat list (once
   * for all of them): each gets it once its list is loaded, for the chats in
   * it (or joined meanwhile) that were not indexed for it when the event
   * came. Without this, an event that came during the load reached no
   * connection of the account. A connection that has more than MAX_HELD
   * events waiting is closed (1013) to resume later.
   */
  private keepEarly(deliver: EarlyEvent, frames = 1): void {
    if (this.loading.size === 0) return;
    this.early.push({ deliver, frames });
    this.earlyFrames += frames;
    for (;;) {
      const first = this.loading.values().next().value;
      if (first === undefined) break;
      if (this.earlyEnd - (first.earlyFrom ?? this.earlyEnd) <= MAX_HELD && this.earlyFrames <= EARLY_MAX_FRAMES) break;
      first.close(CLOSE.tryAgainLater, 'too-far-behind');
      // Trims what only it needed.
      this.loaded(first);
    }
  }

  /** Indexes an account with connections here under a chat it may read (for all its connections). */
  private index(accountId: string, chatId: string): void {
    const readable = this.accountChats.get(accountId);
    if (readable === undefined || readable.has(chatId)) return;
    readable.add(chatId);
    // Early events of this chat from here on are delivered to the account's connections at once.
    this.earlyIndexed.get(accountId)?.at.set(chatId, this.earlyEnd);
    add(this.byChat, chatId, accountId);
  }

  /** The connections indexed under a chat. */
  private *connectionsOf(chatId: string): Generator<Connection> {
    for (const accountId of this.byChat.get(chatId) ?? []) yield* this.byAccount.get(accountId) ?? [];
  }

  private closed(conn: Connection): void {
    if (conn.closed) return;
    conn.closed = true;
    clearTimeout(conn.expiryTimer);
    clearTimeout(conn.graceTimer);
    this.loaded(conn);
    this.open--;
    wsConnections.dec();
    const accountId = conn.session.accountId;
    remove(this.byAccount, accountId, conn);
    remove(this.bySession, conn.session.tokenHash, conn);
    if (this.countFor(accountId) === 0) {
      // The account's last connection here: its chats are no longer indexed.
      for (const chatId of conn.readable) remove(this.byChat, chatId, accountId);
      this.accountChats.delete(accountId);
    }
    if (this.countFor(accountId) > 0 || this.closing || conn.keepsPresence) return;
    void this.depart(accountId);
  }

  /**
   * Clears this process's mark of an account that has no connection here
   * any more, and says so when no instance has one left. Queued behind the
   * account's other presence steps here.
   */
  private depart(accountId: string): Promise<void> {
    const { presence, events } = this.deps;
    return this.presenceStep(accountId, 'presence not cleared', async () => {
      // Another tab may have opened meanwhile, here (its open step comes next) or elsewhere.
      if (this.countFor(accountId) > 0 && !this.closing) return;
      if (await presence.leave(events.origin, accountId)) await events.publish('presence.changed', { accountId, online: false });
    });
  }

  /**
   * Announces offline the accounts whose marks all expired without a close:
   * an instance killed (SIGKILL, its host lost) never said they left. Each
   * such account is taken by one instance only (Presence.expired). Before
   * 2026-12-07 nobody announced them: the members list said offline once the
   * marks expired, but an open tab kept showing them online.
   */
  private async sweepPresence(): Promise<void> {
    const { presence, events, log } = this.deps;
    try {
      const gone = await presence.expired(PRESENCE_SWEEP_MAX);
      // An account still connected here lost its marks to a store that did not answer (the renewals failed): marked again, not announced.
      const here = gone.filter((a) => this.countFor(toOwnerKey(a)) > 0);
      if (here.length > 0) await Promise.all(this.cameBack(await presence.heartbeat(events.origin, here)));
      const offline = gone.filter((a) => this.countFor(toOwnerKey(a)) === 0);
      await Promise.all(offline.map((accountId) => events.publish('presence.changed', { accountId, online: false })));
    } catch (err) {
      log.warn({ err: describeFailure(err).reason }, 'presence sweep failed');
    }
  }

  /**
   * Announces online the accounts a renewal found with no live mark left
   * (still connected here): their marks expired while this process stalled
   * past their TTL (or the store lost them), and another instance's sweep
   * may have announced them offline meanwhile. Until 2026-12-07 the renewal
   * marked them again silently: the members list said online, open tabs
   * kept showing them offline.
   */
  private cameBack(accounts: string[]): Promise<void>[] {
    const { events } = this.deps;
    return accounts
      .map(toOwnerKey)
      .filter((a) => this.countFor(a) > 0)
      .map((accountId) =>
        this.presenceStep(accountId, 'presence not announced', async () => {
          if (this.countFor(accountId) > 0) await events.publish('presence.changed', { accountId, online: true });
        }),
      );
  }

  private ping(): void {
    const now = Date.now();
    for (const [account, said] of this.presenceSaid) if (said.at < now - PRESENCE_SAID_MS) this.presenceSaid.delete(account);
    for (const [hash, at] of this.endedSessions) if (at < now - ENDED_KEPT_MS) this.endedSessions.delete(hash);
    for (const [hash, allowance] of this.allowances) if (!this.bySession.has(hash) && allowance.full()) this.allowances.delete(hash);
    for (const [hash, set] of this.bySession) {
      this.verify(hash).catch((err: unknown) => {
        // Only a definite "this session is over"; an unreachable store proves nothing.
        if (err instanceof AppError && err.status === 401) for (const conn of set) conn.close(CLOSE.sessionEnded, 'session-ended');
      });
    }
    for (const set of this.bySession.values()) {
      for (const conn of set) {
        if (!conn.alive) {
          conn.drop('dead-peer');
          continue;
        }
        conn.alive = false;
        try {
          conn.ws.ping();
        } catch {
          conn.drop('dead-peer');
        }
      }
    }
  }

  // ---- client frames ----------------------------------------------------------

  private async onFrame(conn: Connection, text: string | undefined): Promise<void> {
    // A frame that waited while the connection began closing (its session
    // ended: 4401; rate, shutdown) is dropped, not handled: a `send` queued
    // before a logout must not be stored after it.
    if (conn.ending) return;
    const f: ClientFrame = text === undefined ? { type: 'bad' } : parseClientFrame(text);
    if (f.type === 'resume') {
      // The chats being resumed wait for their replay; every other chat flows
      // live from now on. A chat this connection is not indexed under yet is
      // held too: its join's event may come while the replay is read (until
      // 2026-12-07 its live messages then flowed at once, and came again in
      // the replay). The cursor goes again if the chat turns out unreadable.
      for (const [chatId] of f.chats) {
        if (parseId(chatId) !== null) conn.cursor(chatId).busy = true;
      }
      this.release(conn);
      await this.resume(conn, f);
      return;
    }
    this.release(conn);
    if (f.type === 'send') await this.send(conn, f);
    else conn.send(frame('error', f.clientId === undefined ? { message: 'bad-parameters' } : { client_id: f.clientId, message: 'bad-parameters' }), 'error');
  }

  /** Ends the hold on live messages: whatever was held flows, in order. */
  private release(conn: Connection): void {
    if (!conn.holding) return;
    conn.holding = false;
    clearTimeout(conn.graceTimer);
    for (const [chatId, c] of conn.cursors) {
      if (!c.busy && (c.held.length > 0 || c.read !== undefined)) this.drain(conn, chatId, c);
    }
  }

  /**
   * Replays each chat of a `resume` from the client's iterator, in the order
   * given. Every chat's starting point and first REPLAY_MAX + 1 messages are
   * read in one statement per RESUME_READ_CHATS chats; what follows is the usual catch-up (live messages
   * held meanwhile, more reads only when they are still ahead).
   */
  private async resume(conn: Connection, f: ResumeFrame): Promise<void> {
    for (let at = 0; at < f.chats.length && !conn.closed; at += RESUME_READ_CHATS) {
      await this.resumeSome(conn, f.chats.slice(at, at + RESUME_READ_CHATS));
    }
  }

  /** One statement's share of a `resume` (RESUME_READ_CHATS chats), replayed in the order given. */
  private async resumeSome(conn: Connection, chats: ResumeFrame['chats']): Promise<void> {
    const asked = chats.map(([wireChat, iterator]) => {
      const chatId = parseId(wireChat);
      const cursorId = parseId(iterator);
      return { wireChat, chatId, cursorId };
    });
    const readable = asked.filter((a): a is { wireChat: string; chatId: string; cursorId: string } => a.chatId !== null && a.cursorId !== null);
    const replays = await resumeReplays(
      this.deps.db,
      conn.session.accountId,
      readable.map((a) => ({ chatId: a.chatId, cursorId: toWireId(a.cursorId) === ZERO_ID ? null : a.cursorId })),
      REPLAY_MAX + 1,
    );
    const replayOf = new Map(readable.map((a, i) => [a.wireChat, replays[i]]));
    for (const { wireChat, chatId, cursorId } of asked) {
      if (conn.closed) return;
      const replay = replayOf.get(wireChat);
      if (chatId === null || cursorId === null || replay === undefined || 'missing' in replay) {
        const noChat = chatId === null || (replay !== undefined && 'missing' in replay && replay.missing === 'chat');
        conn.send(frame('error', { chat_id: wireChat, message: noChat ? 'chat-not-found' : 'bad-cursor' }), 'error');
        const wire = chatId === null ? undefined : toWireId(chatId);
        const existing = wire === undefined ? undefined : conn.cursors.get(wire);
        if (wire !== undefined && existing !== undefined) {
          existing.busy = false;
          // Made by this resume for a chat the account may not read: nothing will come to it.
          if (!conn.readable.has(wire) && existing.held.length === 0) conn.cursors.delete(wire);
          else this.drain(conn, wire, existing);
        }
        continue;
      }
      const wire = toWireId(chatId);
      // A chat the account may read but this connection did not know (created since it opened).
      this.index(conn.session.accountId, wire);
      const c = conn.cursor(wire);
      // A repair already reading this chat finishes first; the client's iterator then decides where replay starts.
      while (c.running !== undefined) await c.running;
      c.last = replay.afterSeq;
      await this.startCatchUp(conn, wire, c, replay);
    }
  }

  private async send(conn: Connection, f: SendFrame): Promise<void> {
    // A send is a POST messages: its body is refused by the same rule (a
    // message that is only whitespace, ...) before the write path.
    if (this.deps.checkBody?.('postMessage', { message: f.message }) !== undefined) {
      conn.send(frame('error', { client_id: f.clientId, message: 'bad-parameters' }), 'error');
      return;
    }
    try {
      const { messageId } = await postMessage(this.deps, {
        chatId: f.chatId,
        userId: f.userId,
        accountId: conn.session.accountId,
        text: f.message,
        idempotencyKey: f.clientId,
      });
      conn.send(frame('ack', { client_id: f.clientId, message_id: messageId }), 'ack');
    } catch (err) {
      const wire = toWireError(err);
      if (wire.unexpected) this.deps.log.error({ err }, 'real-time send failed');
      conn.send(frame('error', { client_id: f.clientId, message: err instanceof AppError ? err.code : wire.code }), 'error');
    }
  }

  // ---- ordering: live, replay, repair -------------------------------------------

  /**
   * A live message for one connection: sent (true), dropped as already sent,
   * or held while the database is read.
   */
  private offer(conn: Connection, e: MessageStored, data: string): boolean {
    const c = conn.cursor(e.chatId);
    if (conn.holding || c.busy) {
      this.hold(conn, c, e);
      return false;
    }
    // A no_storage message (seq 0) has no place in the chat order: nothing to
    // replay or repair it from, so it is sent as it comes and moves no position.
    // The event is published once, so it reaches each connection once.
    if (e.seq === UNORDERED) return conn.send(data, 'message', false);
    if (c.last === undefined || e.seq === c.last + 1) {
      c.last = e.seq;
      return conn.send(data, 'message', false);
    }
    if (e.seq <= c.last) return false;
    // Something between was lost or is late: read it from the database first.
    this.hold(conn, c, e);
    void this.startCatchUp(conn, e.chatId, c);
    return false;
  }

  private hold(conn: Connection, c: ChatCursor, e: MessageStored): void {
    // Nothing more is kept for a connection that is closing.
    if (conn.ending) return;
    c.held.push(e);
    conn.heldBytes += heldSize(e);
    // Per chat by count, per connection by size: a replay waiting for a peer
    // that stopped reading holds every chat it resumed (until 2026-12-07 only
    // the count per chat bounded it: 10,000 messages of each chat).
    if (c.held.length > MAX_HELD || conn.heldBytes > conn.heldLimit) conn.close(CLOSE.tryAgainLater, 'too-far-behind');
  }

  /** Takes the first held message of a chat off its list. */
  private unhold(conn: Connection, c: ChatCursor): void {
    const e = c.held.shift();
    if (e !== undefined) conn.heldBytes -= heldSize(e);
  }

  /** The read marker held behind a chat's messages, sent once they were. */
  private sendHeldRead(conn: Connection, c: ChatCursor): void {
    const read = c.read;
    c.read = undefined;
    if (read !== undefined && conn.readMoved(read.chatId, read.seq)) conn.send(read.data, 'read');
  }

  /**
   * Sends held live messages that continue the connection's position, as
   * fast as the peer reads: `more` when its unsent frames reached a quarter
   * of WS_MAX_BUFFER_BYTES with messages still held (the caller waits for
   * them to leave, then calls again), `gap` when one further ahead remains
   * (only the database can fill it), `done` when none is left. Until
   * 2026-12-07 they were all written at once: a client whose replay had
   * held more than WS_MAX_BUFFER_BYTES of live messages was dropped as a
   * slow consumer right after its replay, however fast it read.
   */
  private drainMessages(conn: Connection, c: ChatCursor): 'more' | 'gap' | 'done' {
    // Stable: the unordered (seq 0) messages come first, in the order they arrived.
    c.held.sort((a, b) => a.seq - b.seq);
    while (c.held.length > 0) {
      if (conn.pressed) return 'more';
      const e = c.held[0];
      if (e.seq === UNORDERED) {
        this.unhold(conn, c);
        conn.sendMessage(e, 'live');
        continue;
      }
      if (c.last !== undefined && e.seq <= c.last) {
        this.unhold(conn, c);
        continue;
      }
      if (c.last !== undefined && e.seq !== c.last + 1) return 'gap';
      this.unhold(conn, c);
      c.last = e.seq;
      conn.sendMessage(e, 'live');
    }
    return 'done';
  }

  /** Drains what a chat held once nothing reads the database for it (the rest, if the peer is behind, as it reads). */
  private drain(conn: Connection, chatId: string, c: ChatCursor): void {
    const left = this.drainMessages(conn, c);
    if (left === 'done') this.sendHeldRead(conn, c);
    else void this.startCatchUp(conn, chatId, c, undefined, left === 'more');
  }

  /** Starts reading the database for a chat of a connection (live messages wait meanwhile); `drainFirst`: send what is held before reading. */
  private startCatchUp(conn: Connection, chatId: string, c: ChatCursor, first?: Replay, drainFirst = false): Promise<void> {
    c.busy = true;
    const run = this.catchUp(conn, chatId, c, first, drainFirst).finally(() => {
      if (c.running === run) c.running = undefined;
    });
    c.running = run;
    return run;
  }

  /**
   * Reads from the database what follows the connection's position (at most
   * REPLAY_MAX messages, else `reset`), then the held live messages, until
   * they meet. Started by startCatchUp; clears `c.busy` when done. `first`:
   * what follows the position, read already (by a resume).
   */
  private async catchUp(conn: Connection, chatId: string, c: ChatCursor, first?: Replay, drainFirst = false): Promise<void> {
    const { db, log } = this.deps;
    const uuid = parseId(chatId) as string;
    let emptyReads = 0;
    let read = !drainFirst;
    try {
      for (;;) {
        if (conn.closed) return;
        let rowsRead = 0;
        if (read) {
          const after = c.last ?? 0;
          const { rows, lastSeq } = first ?? (await messagesAfter(db, uuid, after, REPLAY_MAX + 1));
          first = undefined;
          rowsRead = rows.length;
          if (rows.length > REPLAY_MAX) {
            conn.send(frame('reset', { chat_id: chatId }), 'reset');
            c.last = Math.max(lastSeq, after);
          } else {
            for (const row of rows) {
              c.last = row.seq;
              conn.sendMessage(storedFromRow(chatId, row), 'replay');
              await conn.flushed();
              if (conn.closed) return;
            }
          }
        }
        // The held messages, as the peer reads them. The last call and what
        // follows it (the read marker, `busy` cleared) run in one turn, so no
        // live message can be held after it and stay there.
        let left = this.drainMessages(conn, c);
        while (left === 'more') {
          await conn.flushed();
          if (conn.closed) return;
          left = this.drainMessages(conn, c);
        }
        if (left === 'done') {
          this.sendHeldRead(conn, c);
          return;
        }
        if (!read) {
          read = true;
          continue;
        }
        // A held message is ahead of what the database showed: its predecessor commits any moment.
        emptyReads = rowsRead === 0 ? emptyReads + 1 : 0;
        if (emptyReads > 20) {
          log.warn({ chatId, after: c.last }, 'a message announced live is not in the database; closing to let the client resume');
          conn.close(CLOSE.tryAgainLater, 'gap');
          return;
        }
        if (emptyReads > 0) await new Promise((r) => setTimeout(r, 25));
      }
    } catch (err) {
      log.warn({ err: describeFailure(err).reason, chatId }, 'real-time replay failed; closing so the client resumes');
      conn.close(CLOSE.tryAgainLater, 'service-unavailable');
    } finally {
      c.busy = false;
    }
  }

  // ---- domain events ------------------------------------------------------------

  /**
   * Runs `fn` for a chat's event once its creator is known (so a creator's
   * connections learn of a chat made after they opened), keeping the chat's
   * events in order.
   */
  private inOrder(chatId: string, fn: () => void): void {
    if (this.byAccount.size === 0) return;
    const pending = this.chains.get(chatId);
    if (pending === undefined && this.owners.has(chatId)) {
      this.adoptOwner(chatId);
      fn();
      return;
    }
    const next = (pending ?? Promise.resolve())
      .then(async () => {
        if (!this.owners.has(chatId)) {
          const owner = await chatOwner(this.deps.db, parseId(chatId) as string);
          if (this.owners.size >= OWNER_CACHE_MAX) this.owners.delete(this.owners.keys().next().value as string);
          this.owners.set(chatId, owner);
        }
        this.adoptOwner(chatId);
        fn();
      })
      .catch((err: unknown) => {
        this.deps.log.warn({ err: describeFailure(err).reason, chatId }, 'real-time event not delivered; clients catch up with resume');
      })
      .finally(() => {
        if (this.chains.get(chatId) === next) this.chains.delete(chatId);
      });
    this.chains.set(chatId, next);
  }

  private adoptOwner(chatId: string): void {
    const owner = this.owners.get(chatId);
    if (owner === undefined || owner === null) return;
    this.index(owner, chatId);
  }

  private onMessage(e: MessageStored): void {
    this.inOrder(e.chatId, () => {
      if (!this.byChat.has(e.chatId) && this.loading.size === 0) return;
      const data = messageFrame(e);
      this.keepEarly((conn, missed) => {
        if (missed(e.chatId) && this.offer(conn, e, data)) wsFrames.inc({ direction: 'out', type: 'message' });
      });
      let sent = 0;
      for (const conn of this.connectionsOf(e.chatId)) if (this.offer(conn, e, data)) sent++;
      // Metrics once per fan-out: the latency is the last connection's (when the loop ended).
      if (sent > 0) {
        wsFrames.inc({ direction: 'out', type: 'message' }, sent);
        wsDeliveryLatency.observe({ path: 'live' }, Math.max(0, (Date.now() - Date.parse(e.createdAt)) / 1000));
      }
    });
  }

  private onMember(e: MemberJoined): void {
    this.inOrder(e.chatId, () => {
      if (e.accountId !== null) this.index(toOwnerKey(e.accountId), e.chatId);
      const data = frame('member', { chat_id: e.chatId, user_id: e.userId, user_name: e.userName });
      for (const conn of this.connectionsOf(e.chatId)) conn.send(data, 'member');
      this.keepEarly((conn, missed) => {
        if (missed(e.chatId)) conn.send(data, 'member');
      });
    });
  }

  /**
   * A read marker for the account's connections. A post's marker comes in
   * the flush of its message, after it: it takes the chat's turn after the
   * message (which may wait for the chat's creator to be looked up), and a
   * connection that holds the chat's messages (before its first frame,
   * while it reads the database) holds the marker behind them, so `message`
   * always comes first.
   */
  private onRead(e: ReadMoved): void {
    const account = toOwnerKey(e.accountId);
    if (!this.byAccount.has(account)) return;
    if (e.seq === undefined) {
      // From an instance of the previous version (a rolling deploy): the
      // position is the message's. Its `message` took the chat's turn when it
      // came, before this lookup ends, so the marker still follows it.
      this.placeRead(e);
      return;
    }
    const placed: PlacedRead = { ...e, seq: e.seq };
    this.inOrder(e.chatId, () => {
      const conns = this.byAccount.get(account);
      if (conns === undefined) return;
      const data = frame('read', { chat_id: e.chatId, message_id: e.messageId, unread: e.unread });
      for (const conn of conns) {
        // Still loading its chat list: the marker waits behind the messages kept meanwhile.
        if (conn.earlyFrom === undefined || conn.readable.has(e.chatId)) this.readFor(conn, placed, data);
      }
      this.keepEarly((conn, missed) => {
        if (conn.session.accountId === account && missed(e.chatId)) this.readFor(conn, placed, data);
      });
    });
  }

  /** Finds the position of a marker that came without it, then tells it; a message that is not one of the chat's moves nothing. */
  private placeRead(e: ReadMoved): void {
    const chatId = parseId(e.chatId);
    const messageId = parseId(e.messageId);
    if (chatId === null || messageId === null) return;
    seqOfMessage(this.deps.db, chatId, messageId)
      .then((seq) => {
        if (seq !== undefined) this.onRead({ ...e, seq });
      })
      .catch((err: unknown) => this.deps.log.warn({ err: describeFailure(err).reason, chatId: e.chatId }, 'read marker without a position not delivered'));
  }

  private readFor(conn: Connection, e: PlacedRead, data: string): void {
    // A live message of no_storage was read (seq 0): no marker moved, no
    // place in the chat order to wait for or to be behind.
    if (e.seq === UNORDERED) {
      conn.send(data, 'read');
      return;
    }
    const c = conn.readableCursor(e.chatId);
    if (c !== undefined && (conn.holding || c.busy)) {
      if (c.read === undefined || c.read.seq < e.seq) c.read = { chatId: e.chatId, seq: e.seq, data };
      return;
    }
    // Two moves can cross on the way (two instances' posts or reads): a
    // connection never gets a marker behind one it was already sent.
    if (conn.readMoved(e.chatId, e.seq)) conn.send(data, 'read');
  }

  private onSessionEnded(e: SessionEnded): void {
    const now = Date.now();
    for (const hash of e.tokenHashes) {
      this.endedSessions.set(hash, now);
      for (const conn of this.bySession.get(hash) ?? []) conn.close(CLOSE.sessionEnded, `session-ended:${e.reason}`.slice(0, 100));
    }
  }

  private onPresence(e: PresenceChanged): Promise<void> {
    if (this.byChat.size === 0 && this.loading.size === 0) return Promise.resolve();
    const account = toOwnerKey(e.accountId);
    // One after another: two events handled at once could each read the
    // state, then send their frames in the order their lookups came back (an
    // `online` read before the close, sent after its `offline`).
    return this.inTurn(this.presenceTells, account, 'presence not told; told again shortly', async () => {
      try {
        await this.tellPresence(account);
      } catch (err) {
        this.retell(account);
        throw err;
      }
    });
  }

  /**
   * Tells an account's presence again shortly (what holds then is read
   * again): a change that could not be told because Redis or PostgreSQL did
   * not answer is not lost. Until 2026-12-07 it was, and the process had
   * noted it as said, so open tabs kept the old state until the next change.
   */
  private retell(account: string): void {
    if (this.presenceRetells.has(account) || this.closing) return;
    const timer = setTimeout(() => {
      this.presenceRetells.delete(account);
      void this.onPresence({ accountId: account, online: false });
    }, PRESENCE_RETELL_MS);
    timer.unref();
    this.presenceRetells.set(account, timer);
  }

  private async tellPresence(account: string): Promise<void> {
    // Events of two instances can cross on the way (a reload that lands on
    // another instance: its online and the old tab's offline), so the frame
    // says what holds now, read when the event is handled, and only when that
    // differs from what this process last said about the account.
    const online = (await this.deps.presence.online([account])).has(account);
    if (this.presenceSaid.get(account)?.online === online) return;
    // Noted as said only once it can be told (a failed lookup is told again).
    const identities = await identitiesOf(this.deps.db, account);
    this.presenceSaid.set(account, { online, at: Date.now() });
    const told = identities.map((id) => {
      const chatId = toWireId(id.chat_id);
      return { chatId, data: frame('presence', { chat_id: chatId, user_id: toWireId(id.id), user_name: id.user_name, online }) };
    });
    for (const { chatId, data } of told) {
      for (const conn of this.connectionsOf(chatId)) if (conn.session.accountId !== account) conn.send(data, 'presence');
    }
    // One early event for all the account's chats (until 2026-12-07, one per chat and loading connection).
    this.keepEarly((conn, missed) => {
      if (conn.session.accountId === account) return;
      for (const { chatId, data } of told) if (missed(chatId)) conn.send(data, 'presence');
    }, told.length);
  }
}

/** What a held message costs a connection, roughly (its texts and the object around them). */
function heldSize(e: MessageStored): number {
  return 2 * (e.text.length + e.userName.length) + 256;
}

/**
 * Account ids are kept as PostgreSQL gives them (dashed), the form sessions
 * carry; events may carry either form.
 */
function toOwnerKey(accountId: string): string {
  return parseId(accountId) ?? accountId;
}
