import { pingDb } from '../../infra/db';
import { ServiceUnavailable } from '../../errors';
import type { App, AppFactory } from '../types';

/** Liveness and database health; always on, never needs a session. */
export const coreApp: AppFactory = ({ db, log }): App => ({
  name: 'core',
  requires: [],
  publicPaths: ['/ping', '/ping_db'],
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
