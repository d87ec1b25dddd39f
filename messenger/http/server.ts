import http from 'node:http';
import type { Duplex } from 'node:stream';

/** Takes an HTTP upgrade request (WebSocket) off the server. */
export type UpgradeListener = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void;

/** An HTTP server that can drain: finish what is in flight, then close. */
export interface DrainableServer {
  server: http.Server;
  /**
   * Stops accepting connections and lets requests in flight finish until
   * `drainBy` (epoch ms); whatever is still open then is cut. Resolves once
   * every connection is closed.
   */
  drain(drainBy: number): Promise<void>;
}

/**
 * Listens on host:port with `handler` (and `onUpgrade` for upgrade requests,
 * which are otherwise refused); on drain, answers with `Connection: close`
 * and drops idle keep-alives.
 */
export async function listen(handler: http.RequestListener, port: number, host: string, onUpgrade?: UpgradeListener): Promise<DrainableServer> {
  let draining = false;
  const server = http.createServer((req, res) => {
    // A request that arrives on a kept-alive connection during the drain is
    // still served, but its connection is not kept for another.
    if (draining) res.setHeader('Connection', 'close');
    handler(req, res);
  });
  // Longer than a load balancer's idle timeout (nginx keepalive_timeout, ALB 60 s),
  // so the proxy, not us, closes idle connections and never reuses a dead one.
  if (onUpgrade !== undefined) server.on('upgrade', onUpgrade);
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });

  return {
    server,
    drain(drainBy) {
      draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // A connection whose last response was started before the drain turns
      // idle afterwards; close such ones as they appear.
      server.closeIdleConnections();
      const sweeper = setInterval(() => server.closeIdleConnections(), 50);
      const cut = setTimeout(() => server.closeAllConnections(), Math.max(0, drainBy - Date.now()));
      return closed.finally(() => {
        clearInterval(sweeper);
        clearTimeout(cut);
      });
    },
  };
}
