import { createHash } from 'node:crypto';
import type { Kv } from '../../infra/kv';
import { TooManyRequests } from '../../errors';

/** How long a pending-attempt count outlives a process that died mid-login. */
const PENDING_TTL_SECONDS = 60;

export type LoginOutcome = 'succeeded' | 'failed' | 'unknown';

/**
 * Failed-login lockout, per user name and per client address, with separate
 * limits: `maxFailures` for a name, the higher `maxPerAddress` for an address
 * (many people may share one: an office, a proxy). Failures are counted in a
 * window that starts with the first failure; past a limit, every login for
 * that name (or from that address) is refused with 429 until the window ends,
 * even with the right password.
 *
 * Passwords being compared count too, per name only: an attempt may start
 * only while the name's failures + attempts in progress stay within its
 * limit, so a burst of concurrent guesses at one account gets no more than
 * `maxFailures` comparisons, while many different people logging in at once
 * from one address are not held back by each other. One over the limit only
 * because of attempts in progress is told to retry in a second.
 */
export class LoginGuard {
  constructor(
    private readonly kv: Kv,
    private readonly maxFailures: number,
    private readonly maxPerAddress: number,
    private readonly windowSeconds: number,
  ) {}

  private keys(userName: string, address: string): { failures: [string, string]; pending: string } {
    const name = createHash('sha256').update(userName).digest('hex');
    return { failures: [`login:u:${name}`, `login:a:${address}`], pending: `login:pu:${name}` };
  }

  /**
   * Registers an attempt before its password is compared; throws 429
   * too-many-login-attempts when the name or the address is locked out, or
   * when this attempt could push it over the limit. Pair with `end`.
   */
  async begin(userName: string, address: string): Promise<void> {
    const { failures, pending } = this.keys(userName, address);
    // Pending first, failures after: see `end`, which counts a failure before it clears its pending mark.
    const inProgress = await this.kv.incr(pending, PENDING_TTL_SECONDS);
    const [byName, byAddress] = (await this.kv.mget(failures)).map((v) => Number(v ?? 0));
    const locked = byName >= this.maxFailures ? failures[0] : byAddress >= this.maxPerAddress ? failures[1] : undefined;
    const busy = byName + inProgress > this.maxFailures;
    if (locked === undefined && !busy) return;
    await this.clearPending(pending);
    const wait = locked !== undefined ? await this.kv.ttl(locked) : 1;
    throw new TooManyRequests('too-many-login-attempts', Math.max(1, wait));
  }

  /**
   * Ends an attempt: a failure is counted for the name and the address; a
   * success clears the name's failures; an attempt the database could not
   * judge counts for nothing.
   */
  async end(userName: string, address: string, outcome: LoginOutcome): Promise<void> {
    const { failures, pending } = this.keys(userName, address);
    if (outcome === 'failed') await Promise.all(failures.map((k) => this.kv.incr(k, this.windowSeconds)));
    if (outcome === 'succeeded') await this.kv.del(failures[0]);
    await this.clearPending(pending);
  }

  private async clearPending(pending: string): Promise<void> {
    await this.kv.incr(pending, PENDING_TTL_SECONDS, -1);
  }
}
