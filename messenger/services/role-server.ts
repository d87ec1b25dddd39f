import http from 'node:http';
import { backingChecks, runChecksWithVerdict } from '../infra/health';
import { METRICS_CONTENT_TYPE, enableProcessMetrics, metricsGate, metricsText } from '../infra/metrics';
import type { BuiltInfra } from '../infra';
import { authorizationOf } from '../http/authorization';
import { listen, type DrainableServer } from '../http/server';

function send(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'Content-Type': type, 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-store' });
  res.end(body);
}

/**
 * `/health` and `/metrics` of a process without the web role (the search
 * worker, the synchronizer), on `port`, so its own numbers can be
 * scraped and its backing services probed. Same answers as the web
 * process's `/health` and `/metrics`.
 */
export async function serveRoleEndpoints(infra: BuiltInfra, usesBroker: boolean, port: number): Promise<DrainableServer> {
  const { config, db, kv, log } = infra;
  enableProcessMetrics();
  const checks = backingChecks(config, db, kv, usesBroker);
  const mayReadMetrics = metricsGate(config.metricsToken);
  const handler: http.RequestListener = (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    void (async () => {
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'application/json', '{"message":"method-not-allowed"}');
      if (path === '/health') {
        const { results, down } = await runChecksWithVerdict(checks, config.dbTimeoutMs);
        const body = down ? { message: 'service-unavailable', checks: results } : { checks: results };
        return send(res, down ? 503 : 200, 'application/json', JSON.stringify(body));
      }
      if (path === '/metrics') {
        let allowed: boolean;
        try {
          allowed = mayReadMetrics(() => authorizationOf(req));
        } catch {
          allowed = false; // several Authorization headers: refused, as on every other path
        }
        if (!allowed) return send(res, 401, 'application/json', '{"message":"auth-failed"}');
        return send(res, 200, METRICS_CONTENT_TYPE, await metricsText());
      }
      return send(res, 404, 'application/json', '{"message":"not-found"}');
    })().catch((err: unknown) => {
      log.error({ err }, 'role endpoint failed');
      if (!res.headersSent) send(res, 500, 'application/json', '{"message":"internal-error"}');
    });
  };
  const server = await listen(handler, port, config.host);
  log.info({ address: server.server.address() }, 'health and metrics listening');
  return server;
}
