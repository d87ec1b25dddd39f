import bcrypt from 'bcryptjs';
import { findUserByName, insertUser } from '../../db/users';
import { BadRequest, Unauthorized } from '../../errors';
import type { App, AppFactory, ApiContext, Session, AppModule } from '../../types';
import { field } from '../input';
import { clientAddress } from '../client-address';
import { LoginGuard, type LoginOutcome } from './login-guard';
import { SessionStore } from './sessions';

const MAX_PASSWORD_BYTES = 72;

interface Credentials {
  userName: string;
  password: string;
}

function credentials(body: unknown): Credentials {
  const userName = field(body, 'user_name');
  const password = field(body, 'password');
  // bcrypt reads at most 72 bytes; a longer password would be silently cut.
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) throw new BadRequest();
  return { userName, password };
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

/** Accounts and sessions: register, login, logout, and the session check on every non-public path. */
const authApp: AppFactory = ({ config, db, kv, events }): App => {
  const sessions = new SessionStore(db, kv, config.sessionTtlSeconds);
  const guard = new LoginGuard(kv, config.throttling.loginMaxFailures, config.throttling.loginWindowSeconds);
  const trusted = new Set(config.throttling.trustedProxies);
  return {
    name: 'auth',
    requires: [],
    middleware: {
      authenticate: async function authenticate(ctx, next) {
        ctx.state.session = await sessions.resolve(ctx.get('authorization') || undefined);
        await next();
      },
    },
    handlers: {
      async register(ctx, req) {
        const { userName, password } = credentials(req.body);
        const hash = await bcrypt.hash(password, config.bcryptCost);
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
        const address = clientAddress(ctx, trusted);
        await guard.begin(userName, address);
        let outcome: LoginOutcome = 'unknown';
        let user: Awaited<ReturnType<typeof findUserByName>>;
        try {
          user = await findUserByName(db, userName);
          outcome = user !== undefined && (await bcrypt.compare(password, user.password_hash)) ? 'succeeded' : 'failed';
        } finally {
          await guard.end(userName, address, outcome);
        }
        if (user === undefined || outcome !== 'succeeded') {
          throw new BadRequest(user === undefined ? 'user-not-found' : 'bad-password');
        }
        const token = await sessions.create(user.id, user.user_name);
        ctx.status = 201;
        ctx.body = { session_id: token };
      },

      async logout(ctx) {
        const session = sessionOf(ctx);
        await sessions.revoke(session);
        // Open WebSocket connections of this session close (4401) on every instance.
        await events.publish('session.ended', { accountId: session.accountId, tokenHashes: [session.tokenHash], reason: 'logout' });
        ctx.status = 200;
        ctx.body = {};
      },
    },
  };
};

/** The auth app. */
export const app: AppModule = { name: 'auth', create: authApp };
