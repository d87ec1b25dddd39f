import net from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP proxy in front of a real service, for outage tests that must not
 * disturb the shared service itself: `down()` cuts every connection and
 * refuses new ones, `up()` accepts again on the same port. `swallow` makes
 * it a black hole that keeps connections open: what the client sends from
 * then on never reaches the service (a peer that stopped answering).
 */
export class TcpProxy {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  /** While true, bytes from clients are dropped; the connections stay open. */
  swallow = false;
  /** Bytes from clients reach the service this many milliseconds late (a slow link; order kept). */
  delayMs = 0;
  /** Connections accepted so far. */
  accepted = 0;
  /** While true, new connections are cut as soon as they are accepted (the open ones stay). */
  refuseNew = false;
  /** What each open client connection has sent so far (lower-cased, first 64 kB), to pick connections by their commands. */
  private readonly sent = new Map<net.Socket, string>();

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  /** Starts listening (on a free port the first time, the same port afterwards). */
  async up(): Promise<number> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.targetPort, this.targetHost);
      this.sockets.add(client);
      this.sockets.add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      this.accepted += 1;
      if (this.refuseNew) {
        drop();
        return;
      }
      this.sent.set(client, '');
      client.on('close', () => this.sent.delete(client));
      client.on('data', (chunk: Buffer) => {
        const before = this.sent.get(client);
        if (before !== undefined && before.length < 65_536) this.sent.set(client, before + chunk.toString('latin1').toLowerCase());
        if (this.swallow) return;
        if (this.delayMs > 0) setTimeout(() => upstream.write(chunk), this.delayMs);
        else upstream.write(chunk);
      });
      client.on('end', () => upstream.end());
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return this.port;
  }

  /** Cuts the open client connections that have sent `text` (lower case; a command name such as `publish`); returns how many. */
  cutWhereSent(text: string): number {
    let n = 0;
    for (const [client, sent] of this.sent) {
      if (!sent.includes(text)) continue;
      client.destroy();
      n++;
    }
    return n;
  }

  /** Cuts every open connection and stops accepting new ones. */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
