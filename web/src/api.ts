// HTTP access to the API: the session in memory, the refresh token in
// sessionStorage (see docs/web-client.md, "Threat model"), errors as codes.
import { reactive } from 'vue';

/** An API error: the wire code (`{"message": code}`) and the HTTP status (0 when the network failed). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
  ) {
    super(code);
  }
}

const WORDS: Record<string, string> = {
  'bad-parameters': 'Please check what you typed.',
  'user-already-exists': 'That name is taken. Try another one, or log in.',
  'user-not-found': 'No account with that name.',
  'bad-password': 'Wrong password.',
  'auth-failed': 'Please log in.',
  'invalid-session-id': 'You were signed out. Please log in again.',
  'session-id-expired': 'Your session expired. Please log in again.',
  'invalid-refresh-token': 'You were signed out. Please log in again.',
  'chat-not-found': 'No such chat, or you may not see it.',
  'bad-cursor': 'That message is not in this chat.',
  'task-not-found': 'The search has expired. Please search again.',
  'task-not-complete': 'The search is still running.',
  'task-failed': 'The search failed. Please try again.',
  'not-found': 'This server does not offer that yet.',
  'method-not-allowed': 'This server does not offer that.',
  'payload-too-large': 'That is too long.',
  'request-limit-exceeded': 'Too many requests. Wait a moment.',
  'too-many-login-attempts': 'Too many failed attempts. Wait a while before trying again.',
  'too-many-searches': 'Too many searches still waiting. Wait for them to finish, then search again.',
  'service-unavailable': 'The server is busy or restarting. Try again shortly.',
  'internal-error': 'Something went wrong on the server.',
  network: 'No connection to the server.',
};

/** Words for an error, for people rather than programs. */
export function errorWords(err: unknown): string {
  if (err instanceof ApiError) return WORDS[err.code] ?? `Error: ${err.code}`;
  return 'Something went wrong.';
}

/**
 * Whether the server answered the last request: false after a request failed
 * without any answer (connection refused, no network), true again at the next
 * answer, whatever its status. The header shows "Offline, reconnecting…" and
 * presence is unknown while it is false.
 */
export const network = reactive({ reachable: true });

const REFRESH_KEY = 'messenger.refresh';
const NAME_KEY = 'messenger.user';

interface Tokens {
  session_id: string;
  refresh_token?: string;
  expires_in?: number;
}

/** The signed-in account, as the UI sees it. `session` never leaves memory. */
export const auth = reactive({
  userName: '' as string,
  signedIn: false,
  // Why the user was signed out, shown on the login screen.
  reason: '' as string,
});

let session: string | undefined;
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let refreshing: Promise<boolean> | undefined;
/** Bumped with every new session, so a 401 or a 4401 for a session we already replaced is told apart. */
let generation = 0;
let expiresAt = 0;
let lastRefresh = 0;
/** The login chain is ending: a refresh no longer moves the session's expiry. */
let chainEnding = false;

/** Refreshes are never closer together than this (the server's expires_in shrinks to 1 s at the end of a chain). */
const REFRESH_GAP_MS = 10_000;
export const SESSION_EXPIRED = 'Your session expired; sign in again.';

/** Which session is in use (a counter; changes on every login and refresh). */
export function sessionGeneration(): number {
  return generation;
}

/** Why the session could not be renewed, in words. */
export function endedWords(fallback: string): string {
  return chainEnding ? SESSION_EXPIRED : fallback;
}
const signOutListeners: Array<() => void> = [];

/** Runs `fn` whenever the session ends (logout, expiry that refresh could not repair). */
export function onSignOut(fn: () => void): void {
  signOutListeners.push(fn);
}

function storage(): Storage | undefined {
  try {
    return window.sessionStorage;
  } catch {
    return undefined;
  }
}

function adopt(tokens: Tokens, userName: string, refreshed = false): void {
  session = tokens.session_id;
  generation += 1;
  auth.userName = userName;
  auth.signedIn = true;
  auth.reason = '';
  storage()?.setItem(NAME_KEY, userName);
  clearTimeout(refreshTimer);
  if (tokens.refresh_token !== undefined) {
    storage()?.setItem(REFRESH_KEY, tokens.refresh_token);
    const life = tokens.expires_in ?? 3600;
    const before = expiresAt;
    expiresAt = Date.now() + life * 1000;
    // The end of the login chain: the new session ends when the old one did
    // (the server caps it at the chain's end). No more refreshes; sign out once when it ends.
    chainEnding = refreshed && expiresAt - before < REFRESH_GAP_MS;
    if (chainEnding) {
      refreshTimer = setTimeout(() => signOut(SESSION_EXPIRED), life * 1000);
      return;
    }
    // Renew well before the session ends (at 80% of its life, at least 5 s ahead), never within 10 s of the last renewal.
    const inMs = Math.max(REFRESH_GAP_MS, Math.min(life * 800, (life - 5) * 1000));
    refreshTimer = setTimeout(() => {
      void refresh().then((ok) => {
        if (ok || !auth.signedIn) return;
        // A refused token is gone: signed out. A network failure keeps it: try again later.
        if (storage()?.getItem(REFRESH_KEY)) refreshTimer = setTimeout(() => void refresh(), REFRESH_GAP_MS);
        else signOut(endedWords('You were signed out. Please log in again.'));
      });
    }, inMs);
  } else {
    storage()?.removeItem(REFRESH_KEY);
  }
}

/** Forgets the session here (the server side is ended by the caller when it can). */
export function signOut(reason = ''): void {
  const was = auth.signedIn;
  session = undefined;
  expiresAt = 0;
  lastRefresh = 0;
  chainEnding = false;
  clearTimeout(refreshTimer);
  storage()?.removeItem(REFRESH_KEY);
  auth.signedIn = false;
  auth.reason = reason;
  if (was) for (const fn of signOutListeners) fn();
}

/** Exchanges the refresh token for a new pair; one exchange at a time, whoever asks. */
export function refresh(): Promise<boolean> {
  refreshing ??= (async () => {
    if (chainEnding) return false; // a refresh would not give a longer session
    const wait = lastRefresh + REFRESH_GAP_MS - Date.now();
    if (lastRefresh > 0 && wait > 0) await new Promise((r) => setTimeout(r, wait));
    const token = storage()?.getItem(REFRESH_KEY);
    if (!token) return false;
    try {
      lastRefresh = Date.now();
      const res = await raw('POST', '/v1/auth/refresh', { refresh_token: token });
      adopt(res as Tokens, storage()?.getItem(NAME_KEY) ?? auth.userName, true);
      return true;
    } catch (err) {
      // A network failure keeps the token for the next try; a refused token is gone.
      if (err instanceof ApiError && err.status !== 0 && err.status < 500) storage()?.removeItem(REFRESH_KEY);
      return false;
    }
  })().finally(() => {
    refreshing = undefined;
  });
  return refreshing;
}

/** After a reload: a refresh token in this tab's storage brings the session back. */
export async function restore(): Promise<boolean> {
  if (!storage()?.getItem(REFRESH_KEY)) return false;
  return refresh();
}

async function raw(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<unknown> {
  const h: Record<string, string> = { ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  if (session !== undefined && h.Authorization === undefined && !path.startsWith('/v1/auth/refresh')) h.Authorization = `session_id ${session}`;
  let res: Response;
  try {
    res = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'omit' });
  } catch {
    network.reachable = false;
    throw new ApiError(0, 'network');
  }
  network.reachable = true;
  // Bodies are JSON; anything else (a proxy's HTML page) counts as none.
  const data: unknown = await res.json().catch(() => undefined);
  if (!res.ok) {
    const code = typeof data === 'object' && data !== null && typeof (data as { message?: unknown }).message === 'string'
      ? (data as { message: string }).message
      : `http-${res.status}`;
    throw new ApiError(res.status, code);
  }
  return data;
}

const SESSION_ENDED = new Set(['invalid-session-id', 'session-id-expired', 'auth-failed']);

/** Calls the API with the session; on a 401 refreshes once and retries, else signs out. */
export async function api<T>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<T> {
  const used = generation;
  try {
    return (await raw(method, path, body, headers)) as T;
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401 || !SESSION_ENDED.has(err.code)) throw err;
    // Sent with a session we have since replaced (our own refresh ended it): again with the new one.
    if (used !== generation && session !== undefined) return (await raw(method, path, body, headers)) as T;
    if (await refresh()) return (await raw(method, path, body, headers)) as T;
    signOut(endedWords(errorWords(err)));
    throw err;
  }
}

/** The session for the real-time connection's ticket request; undefined when signed out. */
export function hasSession(): boolean {
  return session !== undefined;
}

/** The server takes a password of at most 72 bytes in UTF-8 after Unicode NFC (bcrypt reads no more); a longer one is refused. */
export function passwordTooLong(password: string): boolean {
  return new TextEncoder().encode(password.normalize('NFC')).length > 72;
}

/** Creates an account, then logs in to it. */
export async function register(userName: string, password: string): Promise<void> {
  await raw('POST', '/v1/auth/register', { user_name: userName, password });
  await login(userName, password);
}

/** Logs in and keeps the session (and the refresh token, when the server gives one). */
export async function login(userName: string, password: string): Promise<void> {
  const tokens = (await raw('POST', '/v1/auth/login', { user_name: userName, password })) as Tokens;
  // A login matches the name without regard to case or width ("ALICE" is alice): take the
  // account's own spelling, which the server shows to others, names chats after and lists.
  const me = (await raw('GET', '/v1/auth/me', undefined, { Authorization: `session_id ${tokens.session_id}` }).catch(() => undefined)) as
    | { user_name?: unknown }
    | undefined;
  adopt(tokens, typeof me?.user_name === 'string' ? me.user_name : userName);
}

/** Ends this session on the server, then here. */
export async function logout(all = false): Promise<void> {
  try {
    await raw('POST', all ? '/v1/auth/logout_all' : '/v1/auth/logout');
  } finally {
    signOut(all ? 'You logged out everywhere.' : '');
  }
}

/** Changes the password; other sessions of the account end. */
export async function changePassword(password: string, newPassword: string): Promise<void> {
  await api('POST', '/v1/auth/password', { password, new_password: newPassword });
}

/** The account name remembered in this tab (not secret: shown on every message). */
export function rememberedName(): string {
  return storage()?.getItem(NAME_KEY) ?? '';
}

/** 32 lowercase hex characters from the CSPRNG (works outside secure contexts too, unlike randomUUID). */
export function newId(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
