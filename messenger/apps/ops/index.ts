import fs from 'node:fs/promises';
import path from 'node:path';
// Only the path helper: the package's main module loads its whole browser bundle (~16 MB per worker).
import getAbsoluteFSPath from 'swagger-ui-dist/absolute-path.js';
import { NotFound, Unauthorized } from '../../errors';
import { backingChecks, consumerCheck, runChecksWithVerdict } from '../../infra/health';
import { METRICS_CONTENT_TYPE, enableProcessMetrics, metricsGate, metricsText, trackPool } from '../../infra/metrics';
import { authorizationOf } from '../../http/authorization';
import { swaggerPath } from '../../http/openapi';
import type { App, AppFactory, AppModule } from '../../types';

/** swagger-ui files served under /docs/, with their content types; nothing else from that folder is reachable. */
const ASSETS: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'index.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'application/javascript; charset=utf-8',
  'swagger-ui-standalone-preset.js': 'application/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
};

// Ours rather than swagger-ui-dist's, which points at the petstore example.
const INITIALIZER = `window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: '/swagger.yml',
    dom_id: '#swagger-ui',
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: 'StandaloneLayout',
  });
};
`;

const PAGE = `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>Messenger API</title>
    <link rel="stylesheet" type="text/css" href="/docs/swagger-ui.css">
    <link rel="stylesheet" type="text/css" href="/docs/index.css">
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="/docs/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="/docs/swagger-initializer.js" charset="UTF-8"></script>
  </body>
</html>
`;


/**
 * Operator endpoints, always on and public: `/health` (every backing service
 * with its latency), `/metrics` (Prometheus; a bearer token when
 * METRICS_TOKEN is set), `/docs` (swagger-ui from node_modules) and `/swagger.yml`.
 */
const opsApp: AppFactory = ({ config, db, kv, broker }): App => {
  enableProcessMetrics();
  const checks = backingChecks(config, db, kv, broker !== undefined);
  // A separate search worker is expected in the services mode: say when none is attached.
  if (broker?.kind === 'rabbitmq' && config.apps.includes('search') && !config.search.inProcessConsumer) {
    checks.push(consumerCheck('search_consumers', config.search.queue, (q) => broker.consumerCount(q)));
  }
  // Likewise the synchronizer of the write-behind mode: without one, posts answer 201 and are never stored.
  if (broker?.kind === 'rabbitmq' && config.messageStorage === 'rabbitmq' && !config.sync.inProcess) {
    checks.push(consumerCheck('sync_consumers', config.sync.queue, (q) => broker.consumerCount(q), 'messenger-run-synchronizer'));
  }
  const mayReadMetrics = metricsGate(config.metricsToken);
  const files = new Map<string, Buffer>();
  let untrackPool: (() => void) | undefined;

  async function asset(name: string): Promise<Buffer> {
    let data = files.get(name);
    if (data === undefined) {
      data = await fs.readFile(path.join(getAbsoluteFSPath(), name));
      files.set(name, data);
    }
    return data;
  }

  return {
    name: 'ops',
    requires: [],
    middleware: {},
    async start() {
      untrackPool = trackPool(db);
    },
    async stop() {
      untrackPool?.();
    },
    handlers: {
      async health(ctx) {
        const { results, down } = await runChecksWithVerdict(checks, config.dbTimeoutMs);
        if (down) ctx.state.log.warn({ checks: results }, 'health: a backing service is down');
        ctx.status = down ? 503 : 200;
        ctx.body = down ? { message: 'service-unavailable', checks: results } : { checks: results };
      },

      async metrics(ctx) {
        // Several Authorization headers are 401 auth-failed here too (authorizationOf throws).
        if (!mayReadMetrics(() => authorizationOf(ctx.req))) {
          throw new Unauthorized('auth-failed');
        }
        const text = await metricsText();
        ctx.status = 200;
        ctx.type = METRICS_CONTENT_TYPE;
        ctx.body = text;
      },

      async docsPage(ctx) {
        ctx.status = 200;
        ctx.type = 'text/html; charset=utf-8';
        ctx.body = PAGE;
      },

      async docsAsset(ctx, req) {
        const name = req.params.file;
        ctx.status = 200;
        ctx.set('Cache-Control', 'public, max-age=3600');
        if (name === 'swagger-initializer.js') {
          ctx.type = 'application/javascript; charset=utf-8';
          ctx.body = INITIALIZER;
          return;
        }
        const type = ASSETS[name];
        if (type === undefined) throw new NotFound('not-found');
        ctx.type = type;
        ctx.body = await asset(name);
      },

      async swaggerDocument(ctx) {
        ctx.status = 200;
        ctx.type = 'application/yaml; charset=utf-8';
        ctx.body = await fs.readFile(swaggerPath());
      },
    },
  };
};

/** The ops app. */
export const app: AppModule = { name: 'ops', create: opsApp };
