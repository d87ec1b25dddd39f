import { deleteEndedLogins } from '../../db/session-chains';
import { findUserById, findUserByName, insertUser, updatePasswordHash } from '../../db/users';
import { nameKey } from '../../names';
import { BadRequest, Unauthorized } from '../../errors';
import type { App, AppFactory, ApiContext, Session, AppModule } from '../../types';
import { clientAddress } from '../client-address';
import { LoginGuard, type LoginOutcome } from './login-guard';
import { PasswordHasher } from './passwords';
import { authorizationOf, SessionStore, type Issued } from './sessions';

const MAX_PASSWORD_BYTES = 72;

/** How often one login or password change follows a hash that moved under it (re-hashed by another login) before giving up. */
const MAX_HASH_MOVES = 3;

/** How often each web process deletes the rows of logins long ended (db/session-chains.ts; the delete is idempotent). */
const LOGIN_SWEEP_MS = 60 * 60 * 1000;

/** A password (swagger.yml checked it is a string): 1 to 72 bytes (bcrypt reads at most 72; a longer one would be silently cut). */
function password(value: string): string {
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes < 1 || bytes > MAX_PASSWORD_BYTES) throw new BadRequest();
  return value;
}

interface Credentials {
  userName: string;
  password: string;
}

function credentials(body: { user_name: string; password: string }): Credentials {
  return { userName: body.user_name, password: password(body.password) };
}

/** The session of this request; the auth middleware guarantees it on non-public paths. */
export function sessionOf(ctx: ApiContext): Session {
  const s = ctx.state.session;
  if (s === undefined) throw new Unauthorized('auth-failed');
  return s;
}

function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === '23505';
}

function pairBody(p: Issued): { session_id: string; refresh_token: string; expires_in: number } {
  return { session_id: p.sessionId, refresh_token: p.refreshToken, expires_in: p.expiresIn };
}

/** Accounts and sessions: register, login, refresh, logout (one or all), password change, and the session check on every non-public path. */
const authApp: AppFactory = ({ config, db, kv, events, log }): App => {
  const sessions = new SessionStore(db, kv, events, config.sessionTtlSeconds, config.refreshTtlSeconds);
  const { loginMaxFailures, loginMaxFailuresPerAddress, loginWindowSeconds } = config.throttling;
  const guard = new LoginGuard(kv, loginMaxFailures, loginMaxFailuresPerAddress, loginWindowSeconds);
  const hasher = new PasswordHasher(config.bcryptCost, config.bcryptThreads, config.bcryptNice);
  const trusted = new Set(config.throttling.trustedProxies);

  /** Compares a password under the lockout rules; `hash` undefined means no such account (same cost). */
  async function checkPassword(ctx: ApiContext, userName: string, given: string, hash: () => Promise<string | undefined>): Promise<{ known: boolean; ok: boolean }> {
    const address = clientAddress(ctx.req, trusted);
    // Counted per account, not per spelling: `Alice` and `ＡＬＩＣＥ` share one limit.
    const name = nameKey(userName);
    await guard.begin(name, address);
    let outcome: LoginOutcome = 'unknown';
    try {
      const stored = await hash();
      const ok = await hasher.verify(given, stored);
      outcome = ok ? 'succeeded' : 'failed';
      return { known: stored !== undefined, ok };
    } finally {
      await guard.end(name, address, outcome);
    }
  }

  /**
   * Runs `step` over `hash`, the account's password hash `password` was just
   * checked against. `step` answers undefined when the hash moved meanwhile:
   * it is read again, and when `password` still matches the new one (another
   * login re-hashed it at BCRYPT_COST) `step` runs over that; when it does
   * not (a password change committed), undefined. So a re-hash never makes a
   * login or a change in flight fail, and a change always wins over both.
   */
  async function overCheckedHash<T>(accountId: string, password: string, hash: string, step: (hash: string) => Promise<T | undefined>): Promise<T | undefined> {
    for (let moves = 0; ; moves++) {
      const done = await step(hash);
      if (done !== undefined || moves >= MAX_HASH_MOVES) return done;
      const now = (await findUserById(db, accountId))?.password_hash;
      if (now === undefined || now === hash || !(await hasher.verify(password, now))) return undefined;
      hash = now;
    }
  }

  /**
   * The hash a login goes on with: `hash` itself, or, when it was made at
   * another cost than BCRYPT_COST, a new hash of `password` stored in its
   * place, only over it (undefined, nothing stored, when it moved meanwhile).
   */
  async function upgradedHash(accountId: string, password: string, hash: string): Promise<string | undefined> {
    if (!hasher.needsRehash(hash)) return hash;
    const fresh = await hasher.hash(password);
    return (await updatePasswordHash(db, accountId, fresh, hash)) ? fresh : undefined;
  }

  let sweep: NodeJS.Timeout | undefined;
  const sweepLogins = () => {
    deleteEndedLogins(db).then(
      (n) => n > 0 && log.info({ deleted: n }, 'ended logins deleted'),
      (err: unknown) => log.warn({ err: err instanceof Error ? err.message : err }, 'could not delete ended logins'),
    );
  };

  return {
    name: 'auth',
    requires: [],
    middleware: {
      authenticate: async function authenticate(ctx, next) {
        ctx.state.session = await sessions.resolve(authorizationOf(ctx.req));
        await next();
      },
    },
    authenticateUpgrade: async (req) => sessions.resolve(authorizationOf(req)),
    handlers: {
      async register(ctx, req) {
        const { userName, password } = credentials(req.body);
        const hash = await hasher.hash(password);
        try {
          await insertUser(db, userName, hash);
        } catch (err) {
          if (isUniqueViolation(err)) throw new BadRequest('user-already-exists');
          throw err;
        }
        ctx.status = 201;
        ctx.body = {};
      },

      async login(ctx, req) {
        const { userName, password } = credentials(req.body);
        let user: Awaited<ReturnType<typeof findUserByName>>;
        const { known, ok } = await checkPassword(ctx, userName, password, async () => {
          user = await findUserByName(db, userName);
          return user?.password_hash;
        });
        if (!known || !ok || user === undefined) throw new BadRequest(known ? 'bad-password' : 'user-not-found');
        const { id, user_name } = user;
        // Undefined: the password was changed while this one was being compared; it is not the password now.
        const issued = await overCheckedHash(id, password, user.password_hash, async (checked) => {
          const hash = await upgradedHash(id, password, checked);
          return hash === undefined ? undefined : sessions.login(id, user_name, hash);
        });
        if (issued === undefined) throw new BadRequest('bad-password');
        ctx.status = 201;
        ctx.body = pairBody(issued);
      },

      async refresh(ctx, req) {
        const token = req.body.refresh_token;
        ctx.status = 201;
        ctx.body = pairBody(await sessions.refresh(token));
      },

      async logout(ctx) {
        await sessions.logout(sessionOf(ctx));
        ctx.status = 200;
        ctx.body = {};
      },

      async logoutAll(ctx) {
        await sessions.endAll(sessionOf(ctx).accountId, 'logout-all');
        ctx.status = 200;
        ctx.body = {};
      },

      async changePassword(ctx, req) {
        const session = sessionOf(ctx);
        const current = password(req.body.password);
        const next = password(req.body.new_password);
        let checked: string | undefined;
        const { ok } = await checkPassword(ctx, session.userName, current, async () => {
          checked = (await findUserById(db, session.accountId))?.password_hash;
          return checked;
        });
        if (!ok || checked === undefined) throw new BadRequest('bad-password');
        const hash = await hasher.hash(next);
        // Only over the password just checked: a change that committed meanwhile stands, and this one is refused.
        const changed = await overCheckedHash(session.accountId, current, checked, async (was) =>
          (await sessions.endAll(session.accountId, 'password-changed', session, (trx) => updatePasswordHash(trx, session.accountId, hash, was))) || undefined,
        );
        if (changed === undefined) throw new BadRequest('bad-password');
        ctx.status = 200;
        ctx.body = {};
      },

      async me(ctx) {
        const user = await findUserById(db, sessionOf(ctx).accountId);
        if (user === undefined) throw new Unauthorized('invalid-session-id');
        ctx.status = 200;
        ctx.body = { user_name: user.user_name, created_at: user.created_at.toISOString() };
      },
    },
    async start() {
      sweepLogins();
      sweep = setInterval(sweepLogins, LOGIN_SWEEP_MS).unref();
    },
    async stop() {
      clearInterval(sweep);
      await hasher.close();
    },
  };
};

/** The auth app. */
export const app: AppModule = { name: 'auth', create: authApp };
