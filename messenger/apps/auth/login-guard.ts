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

  /**
   * Counts this attempt as a failure before the password is checked, in one
   * atomic step per key, so concurrent guesses cannot slip past the limit
   * while their hashes are being compared. Throws 429 too-many-login-attempts
   * once the name or the address is over the limit.
   */
  async attempt(userName: string, address: string): Promise<void> {
    const keys = this.keys(userName, address);
    const counts = await Promise.all(keys.map((k) => this.kv.incr(k, this.windowSeconds)));
    for (let i = 0; i < keys.length; i++) {
      if (counts[i] > this.maxFailures) {
        const wait = await this.kv.ttl(keys[i]);
        throw new TooManyRequests('too-many-login-attempts', Math.max(1, wait));
      }
    }
  }

  /** The attempt could not be judged (the database failed): it is taken back for both keys. */
  async release(userName: string, address: string): Promise<void> {
    await Promise.all(this.keys(userName, address).map((k) => this.kv.incr(k, this.windowSeconds, -1)));
  }

  /** The attempt was right after all: the name's count is cleared and the address's attempt taken back. */
  async succeeded(userName: string, address: string): Promise<void> {
    const [name, addr] = this.keys(userName, address);
    await Promise.all([this.kv.del(name), this.kv.incr(addr, this.windowSeconds, -1)]);
  }
}
