import { deleteEndedLogins } from '../../db/session-chains';
import { findUserById, findUserByName, insertUser, updatePasswordHash } from '../../db/users';
import { nameKey } from '../../names';
import { BadRequest, Unauthorized } from '../../errors';
import type { App, AppFactory, ApiContext, Session, AppModule } from '../../types';
import { clientAddress } from '../client-address';
import { LoginGuard, type LoginOutcome } from './login-guard';
import { PasswordHasher } from './passwords';
import { SessionStore, type Issued } from './sessions';
import { authorizationOf } from '../../http/authorization';

const MAX_PASSWORD_BYTES = 72;

/** How often one login or password change follows a hash that moved under it (re-hashed by another login) before giving up. */
const MAX_HASH_MOVES = 3;

/** How often each web process deletes the rows of logins long ended (db/session-chains.ts; the delete is idempotent). */
const LOGIN_SWEEP_MS = 60 * 60 * 1000;

/** 1 to 72 bytes of UTF-8: bcrypt reads at most 72, so a longer password would be silently cut. */
function fitsBcrypt(value: string): boolean {
  const bytes = Buffer.byteLength(value, 'utf8');
  return bytes >= 1 && bytes <= MAX_PASSWORD_BYTES;
}

/**
 * A password as it is hashed (swagger.yml checked it is a string): in
 * Unicode NFC, so `é` typed as one code point and as `e` + combining acute
 * are one password, on any keyboard; 1 to 72 bytes in that form.
 */
function password(value: string): string {
  const nfc = value.normalize('NFC');
  if (!fitsBcrypt(nfc)) throw new BadRequest();
  return nfc;
}

/**
 * The forms a password given to be checked is compared in: its NFC form
 * (what new hashes are made of) first, then, when it differs (and fits
 * bcrypt), as typed: an account registered before passwords were
 * normalised has a hash of that, re-hashed in NFC at its next login.
 */
function passwordForms(value: string): string[] {
  const nfc = password(value);
  return nfc === value || !fitsBcrypt(value) ? [nfc] : [nfc, value];
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

  /**
   * The first of `forms` that `hash` is a hash of; without a hash (no such
   * account) every form is compared against a throwaway one, so an unknown
   * name costs what a wrong password does.
   */
  async function firstMatch(forms: readonly string[], hash: string | undefined): Promise<string | undefined> {
    for (const form of forms) if (await hasher.verify(form, hash)) return form;
    return undefined;
  }

  /** Compares a password (its `forms`, passwordForms) under the lockout rules, as one attempt; `hash` undefined means no such account. */
  async function checkPassword(ctx: ApiContext, userName: string, forms: readonly string[], hash: () => Promise<string | undefined>): Promise<{ known: boolean; matched: string | undefined }> {
    const address = clientAddress(ctx.req, trusted);
    // Counted per account, not per spelling: `Alice` and `ＡＬＩＣＥ` share one limit.
    const name = nameKey(userName);
    await guard.begin(name, address);
    let outcome: LoginOutcome = 'unknown';
    try {
      const stored = await hash();
      const matched = await firstMatch(forms, stored);
      outcome = matched !== undefined ? 'succeeded' : 'failed';
      return { known: stored !== undefined, matched };
    } finally {
      await guard.end(name, address, outcome);
    }
  }

  /**
   * Runs `step` over `hash`, the account's password hash that `matched`, one
   * of the password's `forms`, was just found to match. `step` answers
   * undefined when the hash moved meanwhile: it is read again, and when a
   * form still matches the new one (another login re-hashed it) `step` runs
   * over that; when none does (a password change committed), undefined. So
   * a re-hash never makes a login or a change in flight fail, and a change
   * always wins over both.
   */
  async function overCheckedHash<T>(
    accountId: string,
    forms: readonly string[],
    first: { hash: string; matched: string },
    step: (hash: string, matched: string) => Promise<T | undefined>,
  ): Promise<T | undefined> {
    let { hash, matched } = first;
    for (let moves = 0; ; moves++) {
      const done = await step(hash, matched);
      if (done !== undefined || moves >= MAX_HASH_MOVES) return done;
      const now = (await findUserById(db, accountId))?.password_hash;
      if (now === undefined || now === hash) return undefined;
      const again = await firstMatch(forms, now);
      if (again === undefined) return undefined;
      [hash, matched] = [now, again];
    }
  }

  /**
   * The hash a login goes on with: `hash` itself, or a new hash of the
   * password's NFC form stored in its place when `hash` was made at another
   * cost than BCRYPT_COST or of the password as typed (`matched` is not the
   * NFC form), only over it (undefined, nothing stored, when it moved
   * meanwhile).
   */
  async function upgradedHash(accountId: string, nfc: string, matched: string, hash: string): Promise<string | undefined> {
    if (matched === nfc && !hasher.needsRehash(hash)) return hash;
    const fresh = await hasher.hash(nfc);
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
        const userName = req.body.user_name;
        const hash = await hasher.hash(password(req.body.password));
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
        const userName = req.body.user_name;
        const forms = passwordForms(req.body.password);
        let user: Awaited<ReturnType<typeof findUserByName>>;
        const { known, matched } = await checkPassword(ctx, userName, forms, async () => {
          user = await findUserByName(db, userName);
          return user?.password_hash;
        });
        if (!known || matched === undefined || user === undefined) throw new BadRequest(known ? 'bad-password' : 'user-not-found');
        const { id, user_name } = user;
        // Undefined: the password was changed while this one was being compared; it is not the password now.
        const issued = await overCheckedHash(id, forms, { hash: user.password_hash, matched }, async (checked, form) => {
          const hash = await upgradedHash(id, forms[0], form, checked);
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
        const current = passwordForms(req.body.password);
        const next = password(req.body.new_password);
        let checked: string | undefined;
        const { matched } = await checkPassword(ctx, session.userName, current, async () => {
          checked = (await findUserById(db, session.accountId))?.password_hash;
          return checked;
        });
        if (matched === undefined || checked === undefined) throw new BadRequest('bad-password');
        const hash = await hasher.hash(next);
        // Only over the password just checked: a change that committed meanwhile stands, and this one is refused.
        const changed = await overCheckedHash(session.accountId, current, { hash: checked, matched }, async (was) =>
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
