import { createHash } from 'node:crypto';
import type { Kv } from '../../infra/kv';
import { TooManyRequests } from '../../errors';

/**
 * Failed-login lockout: failures are counted per user name and per client
 * address in a window that starts with the first failure. Past the limit,
 * every login for that name (or from that address) is refused with 429 until
 * the window ends, even with the right password.
 */
export class LoginGuard {
  constructor(
    private readonly kv: Kv,
    private readonly maxFailures: number,
    private readonly windowSeconds: number,
  ) {}

  private keys(userName: string, address: string): string[] {
    const name = createHash('sha256').update(userName).digest('hex');
    return [`login:u:${name}`, `login:a:${address}`];
  }

  /** Throws 429 too-many-login-attempts while the name or the address is locked out. */
  async check(userName: string, address: string): Promise<void> {
    const keys = this.keys(userName, address);
    const counts = await this.kv.mget(keys);
    for (let i = 0; i < keys.length; i++) {
      if (Number(counts[i] ?? 0) >= this.maxFailures) {
        const wait = await this.kv.ttl(keys[i]);
        throw new TooManyRequests('too-many-login-attempts', Math.max(1, wait));
      }
    }
  }

  /** Counts one failed login for the name and the address. */
  async failed(userName: string, address: string): Promise<void> {
    await Promise.all(this.keys(userName, address).map((k) => this.kv.incr(k, this.windowSeconds)));
  }

  /** A successful login clears the name's count (the address keeps its own). */
  async succeeded(userName: string, address: string): Promise<void> {
    await this.kv.del(this.keys(userName, address)[0]);
  }
}
