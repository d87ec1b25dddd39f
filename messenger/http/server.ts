import { randomUUID } from 'node:crypto';
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

const PARSER_ERRORS: Record<string, [number, string, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'headers-too-large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', 'request-timeout'],
};

/**
 * Answers what Node's HTTP parser refuses (huge headers, malformed framing,
 * a request not received in time) in the usual shape: a JSON error body,
 * `Content-Type`, `X-Request-Id` and `nosniff`, then closes the connection.
 */
export function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  if (!socket.writable || (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true) {
    socket.destroy();
    return;
  }
  const [status, reason, code] = PARSER_ERRORS[err.code ?? ''] ?? [400, 'Bad Request', 'bad-parameters'];
  socket.end(errorResponse(status, reason, code));
}

/** The JSON error answer of the listener itself, in the usual shape, closing the connection. */
function errorResponse(status: number, reason: string, code: string): string {
  const body = JSON.stringify({ message: code });
  return (
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `X-Request-Id: ${randomUUID()}\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`
  );
}

/**
 * Listens on host:port with `handler` (and `onUpgrade` for upgrade requests,
 * which are otherwise refused); on drain, answers with `Connection: close`
 * and drops idle keep-alives.
 */
export async function listen(
  handler: http.RequestListener,
  port: number,
  host: string,
  onUpgrade?: UpgradeListener,
  requestTimeoutMs = 30_000,
): Promise<DrainableServer> {
  let draining = false;
  // Responses of requests in flight: when the drain starts, those whose headers are not sent yet
  // are told Connection: close too (a client told keep-alive would send its next
  // request on a connection the drain then closes, and a POST is not retried).
  const unanswered = new Set<http.ServerResponse>();
  // Node checks requestTimeout and headersTimeout only every connectionsCheckingInterval
  // (30 s by default), so headers trickled in (slowloris) or never sent held a connection
  // up to 30 s past REQUEST_TIMEOUT_MS; checked at a tenth of it (0.1 to 1 s), the bound holds.
  const checkEveryMs = Math.max(100, Math.min(1000, Math.floor(requestTimeoutMs / 10)));
  // Node's own check answers an HTTP/1.1 request without Host with an empty 400 (no JSON
  // body, no request id); the same refusal is made below in the usual shape.
  const server = http.createServer({ connectionsCheckingInterval: checkEveryMs, requireHostHeader: false }, (req, res) => {
    if (req.httpVersion === '1.1' && req.headers.host === undefined) {
      res.socket?.end(errorResponse(400, 'Bad Request', 'bad-parameters'));
      return;
    }
    // A request that arrives on a kept-alive connection during the drain is
    // still served, but its connection is not kept for another.
    if (draining) res.setHeader('Connection', 'close');
    else {
      unanswered.add(res);
      // 'close' comes after the response is sent and after an abort alike.
      res.once('close', () => unanswered.delete(res));
    }
    handler(req, res);
  });
  // Longer than a load balancer's idle timeout (nginx keepalive_timeout, ALB 60 s),
  // so the proxy, not us, closes idle connections and never reuses a dead one.
  if (onUpgrade !== undefined) {
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      if (req.httpVersion === '1.1' && req.headers.host === undefined) socket.end(errorResponse(400, 'Bad Request', 'bad-parameters'));
      else onUpgrade(req, socket, head);
    });
  }
  server.on('clientError', answerClientError);
  // CONNECT (a proxy tunnel) is no method of this API: without a listener Node closed the
  // connection with no answer at all; it is refused like any other method a path does not take.
  server.on('connect', (_req: http.IncomingMessage, socket: Duplex) => {
    socket.on('error', () => undefined);
    socket.end(errorResponse(405, 'Method Not Allowed', 'method-not-allowed'));
  });
  // Node keeps only the first 2000 headers and drops the rest unseen, so a second
  // Authorization after 2000 others passed the one-Authorization check (a proxy may
  // read that one). Every header is kept; their total size stays bounded (16 KiB, else 431).
  server.maxHeadersCount = 0;
  server.keepAliveTimeout = 65_000;
  // The whole request (headers and body) must arrive within REQUEST_TIMEOUT_MS:
  // a body that trickles in cannot hold a connection for minutes. The body
  // reader answers 408 itself a little earlier; this is the backstop for the
  // header phase, answered by answerClientError.
  server.requestTimeout = requestTimeoutMs + 1000;
  server.headersTimeout = requestTimeoutMs;
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
      for (const res of unanswered) if (!res.headersSent) res.setHeader('Connection', 'close');
      unanswered.clear();
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
