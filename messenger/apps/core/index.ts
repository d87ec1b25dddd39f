import { pingDb } from '../../infra/db';
import { ServiceUnavailable } from '../../errors';
import type { App, AppFactory, AppModule } from '../../types';

/** Liveness and database health; always on, never needs a session. */
const coreApp: AppFactory = ({ db, log }): App => ({
  name: 'core',
  requires: [],
  middleware: {},
  handlers: {
    async ping(ctx) {
      ctx.status = 200;
      ctx.body = {};
    },

    async pingDb(ctx) {
      try {
        await pingDb(db);
      } catch (err) {
        log.warn({ err }, 'ping_db: database unreachable');
        throw new ServiceUnavailable();
      }
      ctx.status = 200;
      ctx.body = {};
    },
  },
});

/** The core app. */
export const app: AppModule = { name: 'core', create: coreApp };
