// The client's state: chats, the history of each opened chat (a bounded
// window of messages), members and presence, and the outbox of messages not
// yet acknowledged by the server.
import { computed, reactive, shallowReactive, watch } from 'vue';
import { api, ApiError, auth, errorWords, newId, onSignOut } from './api';
import { connection, offline, sendFrame, startRealtime, stopRealtime, type Frame } from './realtime';

/** One message as the API and the `message` frame give it. */
export interface Msg {
  message_id: string;
  user_id: string;
  user_name: string;
  text: string;
  created_at: string;
}

/** A chat list item (GET /v1/chats), plus what the client learns live. */
export interface Chat {
  chat_id: string;
  chat_name: string;
  user_id: string | null;
  direct: boolean;
  last_message: Msg | null;
  unread: number;
  /** Newest activity (last message, else when we learnt of the chat), for sorting. */
  activity: string;
}

export interface Member {
  user_id: string;
  user_name: string;
  online: boolean | null;
}

/** A message on its way: shown at once as pending, retried with the same client_id until acknowledged. */
export interface Outgoing {
  client_id: string;
  chat_id: string;
  user_id: string;
  text: string;
  state: 'pending' | 'failed';
  error: string;
  message_id?: string;
}

/** Messages are paged in blocks; the window keeps at most WINDOW of them in the DOM. */
export const BLOCK = 100;
export const WINDOW = 300;
/**
 * Messages that came live are also kept in memory, the last KEEP per chat,
 * so that scrolling back needs no page for them: with
 * MESSAGE_STORAGE_TYPE=no_storage the server has none to give, and they are
 * all there is.
 */
export const KEEP = 5000;
const ZERO = '00000000000000000000000000000000';

/** What the chat view renders for one chat. */
export interface View {
  /** Index (position in the chat) of messages[0]. */
  start: number;
  messages: Msg[];
  total: number;
  loading: boolean;
  dividerId: string;
  /** The messages before `start` are neither stored by the server nor kept here (no_storage, over KEEP). */
  gone: boolean;
}

/** A message that came live: its arrival number in this session, and whether it was read (seen here, or read up to in another tab). */
interface Live {
  msg: Msg;
  at: number;
  read: boolean;
}

interface History {
  /** message_id → index, for every message seen (ids only, so 10,000 messages cost little). */
  index: Map<string, number>;
  /** checkpoints[k]: the cursor just before message k*BLOCK, so any block can be fetched again with `from`. */
  checkpoints: string[];
  /** The last known message (a page's or a live one); see cursor(). */
  tail: string;
  /**
   * Cursor after the last message a page brought (a stored one): where a
   * scan or `resume` goes on while the server is not known to store its live
   * messages (with MESSAGE_STORAGE_TYPE=no_storage a live message is no
   * cursor: a page after it is refused with 400 bad-cursor).
   */
  paged: string;
  scanning: Promise<void> | undefined;
  scanned: boolean;
  /** Live frames that came while a scan was running; applied after it. */
  buffered: Msg[];
  /**
   * Live frames that came before the chat was first read (the last KEEP of
   * them), shown when it is opened. With stored messages the first scan
   * brings them anyway (they are skipped as seen); with
   * MESSAGE_STORAGE_TYPE=no_storage they are all there is to show.
   */
  kept: Msg[];
  /**
   * Live frames of this chat (the last KEEP), in the order they came, with
   * whether they were read here: what the client learnt live, kept across
   * chat list reloads while the server's list does not have them
   * (MESSAGE_STORAGE_TYPE=no_storage stores none) and counted after a read.
   */
  live: Live[];
  /** index → message, for the messages that came live (the last KEEP): scrolling back to them asks no page. */
  mem: Map<number, Msg>;
  readIndex: number;
  readTimer: ReturnType<typeof setTimeout> | undefined;
  view: View;
}

export const store = reactive({
  chats: {} as Record<string, Chat>,
  members: {} as Record<string, Member[]>,
  outbox: [] as Outgoing[],
  openChat: '' as string,
  toasts: [] as Array<{ id: number; text: string }>,
  /** Which parallel endpoints this server has; false after a 404 not-found. */
  has: { chatList: true, members: true, read: true, direct: true, users: true },
});

const histories = new Map<string, History>();
/** What was typed in a chat's composer and not sent yet (chat_id → text), kept while other chats or panels are open. */
export const drafts = new Map<string, string>();
/** Live messages received in this session (the last one's `at`). */
let liveCount = 0;
/**
 * chat_id → the time of the last message of the server's latest chat list
 * item: its `unread` counted every message up to it. A frame of such a
 * message that comes after the list (a `resume` replaying what was missed
 * while disconnected) is not counted again.
 */
const listed = new Map<string, string>();

/** Whether live message `m` of a chat is in the count of the server's latest list. */
function listedAlready(chatId: string, m: Msg): boolean {
  const at = listed.get(chatId);
  return at !== undefined && m.created_at <= at;
}

/** A chat list is being asked for to learn `stores`. */
let learning = false;
/**
 * Whether the server stores what it delivers live, learnt from a chat list
 * asked for after a live message came (it has the message, or it has not:
 * MESSAGE_STORAGE_TYPE=no_storage); undefined until then.
 */
let stores: boolean | undefined;
let toastSeq = 0;
let pollTimer: ReturnType<typeof setInterval> | undefined;
let listTimer: ReturnType<typeof setInterval> | undefined;

/**
 * Whether the server stores the messages it delivers: false with
 * MESSAGE_STORAGE_TYPE=no_storage. Learnt (a chat list asked for) when not
 * known yet and a live message came to this tab; undefined when none did.
 */
export async function serverStores(): Promise<boolean | undefined> {
  if (stores === undefined && liveCount > 0 && store.has.chatList) await loadChats().catch(() => undefined);
  return stores;
}

/** A short message at the bottom of the screen (read out by screen readers). */
export function toast(text: string): void {
  const id = ++toastSeq;
  store.toasts.push({ id, text });
  setTimeout(() => {
    const i = store.toasts.findIndex((t) => t.id === id);
    if (i >= 0) store.toasts.splice(i, 1);
  }, 5000);
}

/** Chats, newest activity first. */
export const sortedChats = computed(() => Object.values(store.chats).sort((a, b) => (a.activity < b.activity ? 1 : a.activity > b.activity ? -1 : 0)));

/** The server lacks this operation (yet): an unknown path, or a known path without this method. */
function isNotFound(err: unknown): boolean {
  return err instanceof ApiError && ((err.status === 404 && err.code === 'not-found') || (err.status === 405 && err.code === 'method-not-allowed'));
}

// Without GET /v1/chats the client remembers the chats it created or joined in this tab.
function localKey(): string {
  return `messenger.chats.${auth.userName}`;
}

function saveLocal(): void {
  if (store.has.chatList) return;
  const list = Object.values(store.chats).map((c) => ({ chat_id: c.chat_id, chat_name: c.chat_name, user_id: c.user_id, direct: c.direct }));
  sessionStorage.setItem(localKey(), JSON.stringify(list));
}

function loadLocal(): void {
  let list: unknown;
  try {
    list = JSON.parse(sessionStorage.getItem(localKey()) ?? '[]');
  } catch {
    list = [];
  }
  if (!Array.isArray(list)) return;
  for (const c of list as Array<Partial<Chat>>) {
    if (typeof c.chat_id === 'string' && !(c.chat_id in store.chats)) {
      upsertChat({ chat_id: c.chat_id, chat_name: String(c.chat_name ?? ''), user_id: c.user_id ?? null, direct: Boolean(c.direct) });
    }
  }
}

/** Adds or updates a chat list item. */
export function upsertChat(c: Partial<Chat> & { chat_id: string }): Chat {
  const old = store.chats[c.chat_id];
  const defaults: Chat = {
    chat_id: c.chat_id,
    chat_name: '',
    user_id: null,
    direct: false,
    last_message: null,
    unread: 0,
    activity: new Date().toISOString(),
  };
  const merged: Chat = Object.assign(defaults, old, Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined)));
  if (c.last_message) merged.activity = c.last_message.created_at;
  store.chats[c.chat_id] = merged;
  saveLocal();
  return store.chats[c.chat_id];
}

/** A chat's name for people: its name, else the start of its id. */
export function chatTitle(c: Chat | undefined, id = ''): string {
  if (c?.chat_name) return c.chat_name;
  return `Chat ${(c?.chat_id ?? id).slice(0, 8)}`;
}

/**
 * The live messages of a chat that the server's list item does not have
 * (newer than its last message): with MESSAGE_STORAGE_TYPE=no_storage every
 * one (none is stored); otherwise only those that came after the list was
 * read. The ones it has are forgotten (the server's count holds them); those
 * that came before the list was asked for (`asked`) tell whether the server
 * stores live messages.
 */
function unknownLive(chatId: string, last: Msg | null, asked: number): Live[] {
  const h = histories.get(chatId);
  if (h === undefined) return [];
  const unknown = h.live.filter((l) => last === null || l.msg.created_at > last.created_at);
  for (const l of h.live) if (l.at <= asked) stores = !unknown.includes(l);
  h.live = unknown;
  return unknown;
}

/**
 * Loads the chat list (GET /v1/chats); without that endpoint, the chats
 * remembered in this tab. The server's item wins, except for live messages
 * it does not have (see unknownLive): they stay the last message, and those
 * of others not read yet are added to its unread count. So a reload (on
 * reconnect, or for a chat not known yet) keeps what came live in the
 * no_storage mode, and takes a read made in another tab in the others.
 */
export async function loadChats(): Promise<void> {
  if (!store.has.chatList) return;
  try {
    const asked = liveCount;
    const res = await api<{ chats: Array<Omit<Chat, 'activity'> & { created_at?: string }> }>('GET', '/v1/chats?limit=1000');
    const seen = new Set<string>();
    for (const c of res.chats) {
      seen.add(c.chat_id);
      const old = store.chats[c.chat_id];
      const live = unknownLive(c.chat_id, c.last_message, asked);
      if (c.last_message) listed.set(c.chat_id, c.last_message.created_at);
      else listed.delete(c.chat_id);
      const last = live.length > 0 ? live[live.length - 1].msg : c.last_message;
      const unread = c.unread + live.filter((l) => !l.read && l.msg.user_id !== c.user_id).length;
      upsertChat({
        ...c,
        last_message: last,
        activity: last?.created_at ?? old?.activity ?? c.created_at ?? '1970-01-01T00:00:00Z',
        unread: c.chat_id === store.openChat && document.visibilityState === 'visible' ? Math.min(unread, old?.unread ?? unread) : unread,
      });
    }
    for (const id of Object.keys(store.chats)) if (!seen.has(id)) delete store.chats[id];
    settleSent();
  } catch (err) {
    if (isNotFound(err)) {
      store.has.chatList = false;
      loadLocal();
    } else throw err;
  }
}

function history(chatId: string): History {
  let h = histories.get(chatId);
  if (h === undefined) {
    h = {
      index: new Map(),
      checkpoints: [],
      tail: ZERO,
      paged: ZERO,
      scanning: undefined,
      scanned: false,
      buffered: [],
      kept: [],
      live: [],
      mem: new Map(),
      readIndex: -1,
      readTimer: undefined,
      view: shallowReactive({ start: 0, messages: [], total: 0, loading: false, dividerId: '', gone: false }),
    };
    histories.set(chatId, h);
  }
  return h;
}

/** The view of a chat (created empty on first use). */
export function view(chatId: string): View {
  return history(chatId).view;
}

function following(h: History): boolean {
  return h.view.start + h.view.messages.length === h.view.total;
}

/**
 * Appends messages in chat order; skips any already seen; keeps the window
 * bounded while it follows the end. `live`: counted as unread when not on
 * screen; `paged`: they come from a page (else they are kept in `mem`).
 */
function ingest(chatId: string, msgs: Msg[], live: boolean, paged = false): void {
  const h = history(chatId);
  if (msgs.length === 0) return;
  const follow = following(h);
  const added: Msg[] = [];
  for (const m of msgs) {
    if (h.index.has(m.message_id)) continue;
    const i = h.view.total;
    if (i % BLOCK === 0) h.checkpoints[i / BLOCK] = h.tail;
    h.index.set(m.message_id, i);
    h.tail = m.message_id;
    h.view.total = i + 1;
    added.push(m);
    if (!paged) {
      h.mem.set(i, m);
      if (h.mem.size > KEEP) h.mem.delete(h.mem.keys().next().value as number);
    }
    const sent = store.outbox.findIndex((o) => o.message_id === m.message_id);
    if (sent >= 0) store.outbox.splice(sent, 1);
  }
  if (added.length === 0) return;
  if (follow) {
    let next = h.view.messages.concat(added);
    if (next.length > WINDOW) {
      h.view.start += next.length - WINDOW;
      h.view.gone = false;
      next = next.slice(next.length - WINDOW);
    }
    h.view.messages = next;
  }
  const last = added[added.length - 1];
  const chat = store.chats[chatId];
  if (chat !== undefined) {
    chat.last_message = last;
    chat.activity = last.created_at;
    if (live) {
      const others = added.filter((m) => m.user_id !== chat.user_id && !listedAlready(chatId, m)).length;
      const visible = store.openChat === chatId && document.visibilityState === 'visible';
      if (!visible) chat.unread += others;
    }
  }
  // Members we have not heard of yet (without the members endpoint, authors are all we know).
  const list = store.members[chatId];
  if (list !== undefined) {
    for (const m of added) if (!list.some((x) => x.user_id === m.user_id)) list.push({ user_id: m.user_id, user_name: m.user_name, online: null });
  }
}

/**
 * Where a page, a poll and `resume` go on from: the last message known when
 * the server is known to store what it delivers live, else the last one a
 * page brought. Live messages are thus never a cursor before that is known
 * (their page would be refused in the no_storage mode: a 400 in the
 * console); in the other modes a page from the older cursor brings them
 * again, and they are skipped as seen.
 */
function cursor(h: History): string {
  return stores === true ? h.tail : h.paged;
}

/** Reads the chat from its last known cursor to the end (the first time: from the start, keeping only the last window). */
export function scan(chatId: string): Promise<void> {
  const h = history(chatId);
  h.scanning ??= (async () => {
    try {
      for (;;) {
        let res: { messages: Msg[] };
        const from = cursor(h);
        try {
          res = await api<{ messages: Msg[] }>('GET', `/v1/chats/${chatId}/messages?limit=1000&from=${from}`);
        } catch (err) {
          // The cursor is a live message that was never stored: the server does not store them; on from the last page.
          if (!(err instanceof ApiError && err.code === 'bad-cursor') || from === h.paged) throw err;
          stores = false;
          settleSent();
          continue;
        }
        ingest(chatId, res.messages, h.scanned, true);
        if (res.messages.length > 0) h.paged = res.messages[res.messages.length - 1].message_id;
        if (res.messages.length < 1000) break;
      }
      h.scanned = true;
      // Already counted in `unread` when they came: not counted again.
      const kept = h.kept;
      h.kept = [];
      ingest(chatId, kept, false);
    } finally {
      const buffered = h.buffered;
      h.buffered = [];
      h.scanning = undefined;
      ingest(chatId, buffered, true);
    }
  })();
  return h.scanning;
}

async function page(chatId: string, from: string, limit: number): Promise<Msg[]> {
  const res = await api<{ messages: Msg[] }>('GET', `/v1/chats/${chatId}/messages?limit=${limit}&from=${from}`);
  return res.messages;
}

/** Messages number `from` to `to` (exclusive) when all of them are kept in memory; else undefined. */
function kept(h: History, from: number, to: number): Msg[] | undefined {
  const out: Msg[] = [];
  for (let i = from; i < to; i++) {
    const m = h.mem.get(i);
    if (m === undefined) return undefined;
    out.push(m);
  }
  return out;
}

/**
 * Messages number `from` up to `from + limit` (at most the total): from
 * memory when they are all kept there, else a page from the checkpoint of
 * `from`'s block (`from` is the start of a block then).
 */
async function messagesAt(chatId: string, from: number, limit: number): Promise<Msg[]> {
  const h = history(chatId);
  const inMemory = kept(h, from, Math.min(h.view.total, from + limit));
  if (inMemory !== undefined) return inMemory;
  return page(chatId, h.checkpoints[Math.floor(from / BLOCK)] ?? ZERO, limit);
}

/** Scrolling back: fetches the block before the window again from its checkpoint. Returns how many were added. */
export async function loadOlder(chatId: string): Promise<number> {
  const h = history(chatId);
  const v = h.view;
  if (v.start === 0 || v.loading || v.gone) return 0;
  v.loading = true;
  try {
    const block = Math.floor((v.start - 1) / BLOCK);
    let older: Msg[];
    if (stores === false && kept(h, block * BLOCK, v.start) === undefined) {
      // Not stored, and the older ones no longer kept here: those that are, then no further.
      older = [];
      for (let i = v.start - 1; i >= block * BLOCK && h.mem.has(i); i--) older.unshift(h.mem.get(i) as Msg);
      if (older.length === 0) {
        v.gone = true;
        return 0;
      }
    } else older = (await messagesAt(chatId, block * BLOCK, BLOCK)).slice(0, v.start - block * BLOCK);
    let next = older.concat(v.messages);
    if (next.length > WINDOW) next = next.slice(0, WINDOW);
    v.start -= older.length;
    v.messages = next;
    return older.length;
  } finally {
    v.loading = false;
  }
}

/** Scrolling forward again after having scrolled back. Returns how many were added. */
export async function loadNewer(chatId: string): Promise<number> {
  const h = history(chatId);
  const v = h.view;
  if (following(h) || v.loading || v.messages.length === 0) return 0;
  v.loading = true;
  try {
    const end = v.start + v.messages.length;
    const msgs = kept(h, end, Math.min(v.total, end + BLOCK)) ?? (await page(chatId, v.messages[v.messages.length - 1].message_id, BLOCK));
    const newer = msgs.slice(0, v.total - end);
    let next = v.messages.concat(newer);
    if (next.length > WINDOW) {
      v.start += next.length - WINDOW;
      v.gone = false;
      next = next.slice(next.length - WINDOW);
    }
    v.messages = next;
    return newer.length;
  } finally {
    v.loading = false;
  }
}

/** Loads the window around message number `i`: from the block before its block, up to WINDOW messages. */
async function windowAround(chatId: string, i: number): Promise<void> {
  const h = history(chatId);
  const block = Math.max(0, Math.floor(i / BLOCK) - 1);
  const msgs = await messagesAt(chatId, block * BLOCK, BLOCK * 3);
  h.view.start = block * BLOCK;
  h.view.gone = false;
  h.view.messages = msgs.slice(0, Math.min(WINDOW, h.view.total - block * BLOCK));
}

/** Shows the window around message `messageId` (a search result); false when it is not in the chat. */
export async function jumpTo(chatId: string, messageId: string): Promise<boolean> {
  await scan(chatId);
  const i = history(chatId).index.get(messageId);
  if (i === undefined) return false;
  await windowAround(chatId, i);
  return true;
}

/** Back to the newest messages. */
export async function jumpToLatest(chatId: string): Promise<void> {
  const h = history(chatId);
  if (following(h)) return;
  const block = Math.floor(Math.max(0, h.view.total - BLOCK * 2) / BLOCK);
  const msgs = await messagesAt(chatId, block * BLOCK, 1000);
  h.view.start = block * BLOCK;
  h.view.gone = false;
  h.view.messages = msgs.slice(0, h.view.total - block * BLOCK);
  await scan(chatId);
}

/** Opens a chat: its history up to now, members, and where the "new messages" divider goes. */
export async function openChat(chatId: string): Promise<void> {
  // Straight from another chat (no closeChat in between): that one is left.
  if (store.openChat && store.openChat !== chatId) closeChat();
  store.openChat = chatId;
  const h = history(chatId);
  const unread = store.chats[chatId]?.unread ?? 0;
  await scan(chatId);
  if (store.openChat !== chatId) return;
  // The divider sits above the oldest unread message. Unread counts every
  // message after the read marker, and posting moves the poster's marker, so
  // the oldest unread one is number total - unread. When it is older than the
  // window kept at the end, the window around it is loaded instead: the chat
  // opens on what has not been read, and nothing unseen is marked read.
  h.view.dividerId = '';
  // Everything before the oldest unread message was read (see countUnseen).
  h.readIndex = Math.max(h.readIndex, h.view.total - unread - 1);
  if (unread > 0 && h.view.total > 0) {
    const first = Math.max(0, h.view.total - unread);
    if (first < h.view.start) await windowAround(chatId, first);
    if (store.openChat !== chatId) return;
    h.view.dividerId = h.view.messages[first - h.view.start]?.message_id ?? '';
  }
  void loadMembers(chatId).catch(() => undefined);
}

/** Closes the chat view (the history stays for a quick return); what came and was not seen stays unread. */
export function closeChat(): void {
  const id = store.openChat;
  store.openChat = '';
  if (id) countUnseen(id);
}

/**
 * A chat is left: the messages of others after the last one seen (its end
 * on screen) are unread. While the chat is open and the tab visible, a new
 * message is not counted (it is on screen, or will be); one that came while
 * the reader was scrolled up was never seen, and would not count at all.
 */
function countUnseen(chatId: string): void {
  const chat = store.chats[chatId];
  const h = histories.get(chatId);
  if (chat === undefined || h === undefined || !h.scanned) return;
  let unseen = 0;
  for (let i = h.readIndex + 1; i < h.view.total; i++) {
    const m = h.mem.get(i) ?? h.view.messages[i - h.view.start];
    if (m !== undefined && m.user_id !== chat.user_id) unseen += 1;
  }
  chat.unread = Math.max(chat.unread, unseen);
}

/** Chats whose members are being asked for (so one ask is made at a time). */
const membersAsked = new Set<string>();

/**
 * A chat's list item is on screen: its members are loaded when the item
 * shows something that depends on them and they are not loaded yet: the
 * online dot of a direct chat (its other member's presence), or the name tag
 * of a group's last message (another member with the same name). Every
 * other chat's members are loaded when it is opened, so signing in asks for
 * none (until 2026-12-07 it asked for those of the 30 newest chats at once).
 */
export function listItemShown(chatId: string): void {
  const chat = store.chats[chatId];
  if (chat === undefined || chatId in store.members || membersAsked.has(chatId)) return;
  if (chat.direct || chat.last_message) void loadMembers(chatId).catch(() => undefined);
}

/** Members with presence (GET /v1/chats/{id}/users); without it, the authors seen so far. */
export async function loadMembers(chatId: string): Promise<void> {
  membersAsked.add(chatId);
  try {
    await askMembers(chatId);
  } finally {
    membersAsked.delete(chatId);
  }
}

async function askMembers(chatId: string): Promise<void> {
  if (store.has.members) {
    try {
      const res = await api<{ users: Member[] }>('GET', `/v1/chats/${chatId}/users`);
      store.members[chatId] = res.users;
      return;
    } catch (err) {
      if (!isNotFound(err)) throw err;
      store.has.members = false;
    }
  }
  const seen = new Map<string, Member>();
  for (const m of history(chatId).view.messages) seen.set(m.user_id, { user_id: m.user_id, user_name: m.user_name, online: null });
  const me = store.chats[chatId]?.user_id;
  if (me && !seen.has(me)) seen.set(me, { user_id: me, user_name: auth.userName, online: true });
  store.members[chatId] = [...seen.values()];
}

/**
 * Tags for the members of a chat whose display name another member of that
 * chat also uses (user_id → "#" and the first 6 hex digits of the user_id):
 * anyone may join a group under any name, so two "carol"s are told apart by
 * something the impostor cannot choose. Empty when every name is unique.
 */
export function nameTags(chatId: string): Map<string, string> {
  const byName = new Map<string, string[]>();
  for (const m of store.members[chatId] ?? []) {
    const ids = byName.get(m.user_name) ?? [];
    if (!ids.includes(m.user_id)) ids.push(m.user_id);
    byName.set(m.user_name, ids);
  }
  const tags = new Map<string, string>();
  for (const ids of byName.values()) if (ids.length > 1) for (const id of ids) tags.set(id, `#${id.slice(0, 6)}`);
  return tags;
}

/** Whether the other member of a direct chat is online (group chats have no dot: their members list shows presence). */
export function chatOnline(chatId: string): boolean {
  const chat = store.chats[chatId];
  if (!chat?.direct) return false;
  return (store.members[chatId] ?? []).some((m) => m.user_id !== chat.user_id && m.online === true);
}

/** A message came into view: moves the read marker forward (batched). */
export function seen(chatId: string, messageId: string): void {
  const h = history(chatId);
  const i = h.index.get(messageId);
  if (i === undefined || i <= h.readIndex || document.visibilityState !== 'visible') return;
  h.readIndex = i;
  clearTimeout(h.readTimer);
  h.readTimer = setTimeout(() => void postRead(chatId, messageId), 300);
}

/**
 * The account read the chat up to `messageId`, here or in another tab (a
 * `read` frame); `unread` is the server's count. Live messages up to it are
 * read. Those of others after it that are not read yet are in that count
 * when the server stores messages, and are added when it does not (it never
 * counts a live one); while that is not known, the chat list is asked.
 */
function readUpTo(chatId: string, messageId: string, unread: number): void {
  const chat = store.chats[chatId];
  if (chat === undefined) return;
  const live = history(chatId).live;
  const p = live.findIndex((l) => l.msg.message_id === messageId);
  for (let i = 0; i <= p; i++) live[i].read = true;
  const after = p < 0 ? 0 : live.slice(p + 1).filter((l) => !l.read && l.msg.user_id !== chat.user_id).length;
  chat.unread = unread + (stores === false ? after : 0);
  if (after > 0 && stores === undefined) void loadChats().catch(() => undefined);
}

/** Without a read endpoint: everything is read once the last message was seen. */
function readAllHere(chatId: string): void {
  const chat = store.chats[chatId];
  const h = history(chatId);
  if (chat === undefined || h.readIndex < h.view.total - 1) return;
  chat.unread = 0;
  for (const l of h.live) l.read = true;
}

async function postRead(chatId: string, messageId: string): Promise<void> {
  if (!store.has.read) {
    readAllHere(chatId);
    return;
  }
  try {
    const res = await api<{ unread: number }>('POST', `/v1/chats/${chatId}/read`, { message_id: messageId });
    readUpTo(chatId, messageId, res.unread);
  } catch (err) {
    if (isNotFound(err)) {
      store.has.read = false;
      readAllHere(chatId);
    }
  }
}

/** A message came live: noted for the chat list (see History.live). */
function noteLive(chatId: string, m: Msg): void {
  const h = history(chatId);
  if (h.live.some((l) => l.msg.message_id === m.message_id)) return;
  // Read once seen (readUpTo), not when it came: the reader may be scrolled up.
  h.live.push({ msg: m, at: ++liveCount, read: false });
  if (h.live.length > KEEP) h.live.splice(0, h.live.length - KEEP);
}

// ---- sending ----------------------------------------------------------------

const retryTimers = new Map<string, ReturnType<typeof setTimeout>>();

/** Sends a message: shown at once as pending, then delivered (socket, else HTTP) until acknowledged. */
export function send(chatId: string, text: string): void {
  const chat = store.chats[chatId];
  if (!chat?.user_id) return;
  store.outbox.push({ client_id: newId(), chat_id: chatId, user_id: chat.user_id, text, state: 'pending', error: '' });
  deliver(store.outbox[store.outbox.length - 1], 0);
}

/** Tries a failed message again (same client_id: never stored twice). */
export function retry(o: Outgoing): void {
  o.state = 'pending';
  o.error = '';
  deliver(o, 0);
}

/** Gives up on a failed message. */
export function discard(o: Outgoing): void {
  const i = store.outbox.indexOf(o);
  if (i >= 0) store.outbox.splice(i, 1);
}

function later(o: Outgoing, attempt: number): void {
  clearTimeout(retryTimers.get(o.client_id));
  const ms = Math.min(15_000, 1000 * 2 ** attempt);
  retryTimers.set(o.client_id, setTimeout(() => deliver(o, attempt + 1), ms));
}

function deliver(o: Outgoing, attempt: number): void {
  if (!store.outbox.includes(o) || o.state !== 'pending' || o.message_id !== undefined) return;
  const frame = { type: 'send', client_id: o.client_id, chat_id: o.chat_id, user_id: o.user_id, message: o.text };
  if (sendFrame(frame)) {
    later(o, attempt); // resent with the same client_id until the ack
    return;
  }
  void (async () => {
    try {
      const res = await api<{ message_id: string }>(
        'POST',
        `/v1/chats/${o.chat_id}/messages?user_id=${o.user_id}`,
        { message: o.text },
        { 'Idempotency-Key': o.client_id },
      );
      acked(o.client_id, res.message_id);
    } catch (err) {
      const transient = err instanceof ApiError && (err.status === 0 || err.status >= 500 || err.status === 429);
      if (transient) later(o, attempt);
      else failed(o.client_id, errorWords(err));
    }
  })();
}

function acked(clientId: string, messageId: string): void {
  clearTimeout(retryTimers.get(clientId));
  retryTimers.delete(clientId);
  const o = store.outbox.find((x) => x.client_id === clientId);
  if (o === undefined) return;
  o.message_id = messageId;
  // Already here (the frame came before the ack): the bubble goes; else it waits for the frame or the next poll.
  if (history(o.chat_id).index.has(messageId)) discard(o);
  else if (stores === false) settleSent();
  else if (connection.state !== 'live') void scan(o.chat_id).catch(() => undefined);
}

/**
 * The server does not store what it delivers (MESSAGE_STORAGE_TYPE=no_storage):
 * a message it took (201) while this tab had no socket was delivered to the
 * others' connections, and no frame or page will ever bring it here. It is
 * shown as the message it is (id from the 201, sent now) instead of a bubble
 * waiting for it.
 */
function settleSent(): void {
  if (stores !== false) return;
  for (const o of [...store.outbox]) {
    if (o.message_id === undefined || o.state !== 'pending') continue;
    const name = store.members[o.chat_id]?.find((m) => m.user_id === o.user_id)?.user_name ?? auth.userName;
    onFrame({ type: 'message', chat_id: o.chat_id, message_id: o.message_id, user_id: o.user_id, user_name: name, text: o.text, created_at: new Date().toISOString() });
    discard(o);
  }
}

function failed(clientId: string, words: string): void {
  clearTimeout(retryTimers.get(clientId));
  const o = store.outbox.find((x) => x.client_id === clientId);
  if (o === undefined) return;
  o.state = 'failed';
  o.error = words;
}

// ---- real-time frames ---------------------------------------------------------

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function onFrame(f: Frame): void {
  const chatId = str(f.chat_id);
  switch (f.type) {
    case 'message': {
      const m: Msg = { message_id: str(f.message_id), user_id: str(f.user_id), user_name: str(f.user_name), text: str(f.text), created_at: str(f.created_at) };
      noteLive(chatId, m);
      if (!(chatId in store.chats)) void loadChats().catch(() => undefined); // a chat we did not know of yet
      else if (stores === undefined && !learning && store.has.chatList) {
        // Whether the server stores what it delivers: its list has this message, or not.
        learning = true;
        void loadChats()
          .catch(() => undefined)
          .finally(() => {
            learning = false;
          });
      }
      const h = history(chatId);
      if (h.scanning) h.buffered.push(m);
      else if (h.scanned) ingest(chatId, [m], true);
      else {
        // Not opened yet: the list item changes, and the message is kept for
        // when it is opened (which reads the history first).
        h.kept.push(m);
        if (h.kept.length > KEEP) h.kept.splice(0, h.kept.length - KEEP);
        const chat = store.chats[chatId];
        if (chat) {
          chat.last_message = m;
          chat.activity = m.created_at;
          if (m.user_id !== chat.user_id && !listedAlready(chatId, m)) chat.unread += 1;
        }
        const o = store.outbox.find((x) => x.message_id === m.message_id);
        if (o) discard(o);
      }
      break;
    }
    case 'member': {
      const list = store.members[chatId];
      const member = { user_id: str(f.user_id), user_name: str(f.user_name), online: true };
      if (list && !list.some((x) => x.user_id === member.user_id)) list.push(member);
      if (!(chatId in store.chats)) void loadChats().catch(() => undefined);
      break;
    }
    case 'read': {
      if (typeof f.unread === 'number') readUpTo(chatId, str(f.message_id), f.unread);
      break;
    }
    case 'presence': {
      if (typeof f.online !== 'boolean') break;
      const uid = str(f.user_id);
      const name = str(f.user_name);
      for (const [cid, list] of Object.entries(store.members)) {
        if (chatId && cid !== chatId) continue;
        for (const m of list) if ((uid && m.user_id === uid) || (!uid && name && m.user_name === name)) m.online = f.online;
      }
      break;
    }
    case 'reset': {
      // The server will not replay: page from where we are.
      if (history(chatId).scanned) void scan(chatId).catch(() => undefined);
      break;
    }
    case 'ack':
      acked(str(f.client_id), str(f.message_id));
      break;
    case 'error':
      if (f.client_id !== undefined) failed(str(f.client_id), errorWords(new ApiError(400, str(f.message))));
      break;
    default:
      break;
  }
}

/** Socket openings in this session: from the second on, presence frames may have been missed meanwhile. */
let opened = 0;

/** Presence as the server has it now, for every chat whose members are loaded. */
function reloadPresence(): void {
  for (const id of Object.keys(store.members)) void loadMembers(id).catch(() => undefined);
}

// While the server cannot be reached, nobody's presence is known: every dot
// goes grey (rather than showing what was true before the outage). When it
// answers again, presence is asked anew: by the socket's reopening, or at
// once on a server without a real-time endpoint (no socket will open).
watch(offline, (now) => {
  if (!auth.signedIn) return;
  if (now) {
    for (const list of Object.values(store.members)) for (const m of list) m.online = null;
  } else if (!connection.events) reloadPresence();
});

function onOpened(): void {
  opened += 1;
  if (opened > 1) reloadPresence();
  const chats: Record<string, string> = {};
  for (const [id, h] of histories) if (h.scanned) chats[id] = cursor(h);
  sendFrame({ type: 'resume', chats });
  void loadChats().catch(() => undefined);
  for (const o of store.outbox) if (o.state === 'pending' && o.message_id === undefined) deliver(o, 0);
}

/** After sign-in: chat list, real-time connection, and polling while the connection is down. */
export async function startSession(): Promise<void> {
  startRealtime({ frame: onFrame, opened: onOpened });
  await loadChats().catch((err: unknown) => toast(errorWords(err)));
  clearInterval(pollTimer);
  clearInterval(listTimer);
  // Degraded mode: without a live socket, the open chat is polled with `next` every 2 s.
  pollTimer = setInterval(() => {
    if (connection.state === 'live' || !store.openChat) return;
    if (history(store.openChat).scanned) void scan(store.openChat).catch(() => undefined);
  }, 2000);
  listTimer = setInterval(() => {
    if (connection.state !== 'live' && store.has.chatList) void loadChats().catch(() => undefined);
  }, 10_000);
}

onSignOut(() => {
  stopRealtime();
  opened = 0;
  clearInterval(pollTimer);
  clearInterval(listTimer);
  for (const t of retryTimers.values()) clearTimeout(t);
  retryTimers.clear();
  histories.clear();
  drafts.clear();
  listed.clear();
  stores = undefined;
  store.chats = {};
  store.members = {};
  store.outbox = [];
  store.openChat = '';
  store.has = { chatList: true, members: true, read: true, direct: true, users: true };
});

// ---- chats ----------------------------------------------------------------------

/** Creates a chat and joins it under the account name. */
export async function createChat(name: string): Promise<string> {
  const { chat_id } = await api<{ chat_id: string }>('POST', '/v1/chats', { chat_name: name });
  upsertChat({ chat_id, chat_name: name });
  await joinChat(chat_id, auth.userName);
  return chat_id;
}

/** Joins a chat by id under `displayName`. */
export async function joinChat(chatId: string, displayName: string): Promise<void> {
  const { user_id } = await api<{ user_id: string }>('POST', `/v1/chats/${chatId}/users`, { user_name: displayName });
  upsertChat({ chat_id: chatId, user_id });
  await loadChats().catch(() => undefined);
}

/** Opens (or finds) the one-to-one chat with another account. */
export async function startDirect(userName: string): Promise<string> {
  const { chat_id, user_id } = await api<{ chat_id: string; user_id: string }>('POST', '/v1/direct', { user_name: userName });
  upsertChat({ chat_id, user_id, direct: true, chat_name: store.chats[chat_id]?.chat_name || userName });
  await loadChats().catch(() => undefined);
  return chat_id;
}

/** The chat id in a pasted link or id (`…/#/join/<id>`, 32 hex or the dashed form); '' when there is none. */
export function parseChatId(input: string): string {
  const m = /([0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12})/i.exec(input);
  return m ? m[1].replace(/-/g, '').toLowerCase() : '';
}

export { isNotFound };
