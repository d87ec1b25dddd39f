import { createHash } from 'node:crypto';
import type { Kv } from '../../infra/kv';
import { TooManyRequests } from '../../errors';

/** How long a pending-attempt count outlives a process that died mid-login. */
const PENDING_TTL_SECONDS = 60;

export type LoginOutcome = 'succeeded' | 'failed' | 'unknown';

/**
 * Failed-login lockout, per user name and per client address. Failures are
 * counted in a window that starts with the first failure; past
 * `maxFailures`, every login for that name (or from that address) is refused
 * with 429 until the window ends, even with the right password.
 *
 * Passwords being compared count too: an attempt may start only while
 * failures + attempts in progress stay within the limit, so a burst of
 * concurrent guesses gets no more than `maxFailures` comparisons. One over
 * that only because of attempts in progress is told to retry in a second.
 */
export class LoginGuard {
  constructor(
    private readonly kv: Kv,
    private readonly maxFailures: number,
    private readonly windowSeconds: number,
  ) {}

  private keys(userName: string, address: string): { failures: string[]; pending: string[] } {
    const name = createHash('sha256').update(userName).digest('hex');
    return { failures: [`login:u:${name}`, `login:a:${address}`], pending: [`login:pu:${name}`, `login:pa:${address}`] };
  }

  /**
   * Registers an attempt before its password is compared; throws 429
   * too-many-login-attempts when the name or the address is locked out, or
   * when this attempt could push it over the limit. Pair with `end`.
   */
  async begin(userName: string, address: string): Promise<void> {
    const { failures, pending } = this.keys(userName, address);
    // Pending first, failures after: see `end`, which counts a failure before it clears its pending mark.
    const inProgress = await Promise.all(pending.map((k) => this.kv.incr(k, PENDING_TTL_SECONDS)));
    const failed = (await this.kv.mget(failures)).map((v) => Number(v ?? 0));
    const locked = failed.findIndex((n) => n >= this.maxFailures);
    const busy = failed.some((n, i) => n + inProgress[i] > this.maxFailures);
    if (locked < 0 && !busy) return;
    await this.clearPending(pending);
    const wait = locked >= 0 ? await this.kv.ttl(failures[locked]) : 1;
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

  private async clearPending(pending: string[]): Promise<void> {
    await Promise.all(pending.map((k) => this.kv.incr(k, PENDING_TTL_SECONDS, -1)));
  }
}
