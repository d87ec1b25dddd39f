import { MODE } from './env';
import { startHarness, stopHarness } from './harness';

/** Mocha root hooks: the shared harness lives for the whole run. */
export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(60_000);
    process.stdout.write(`  test mode: ${MODE}\n`);
    await startHarness();
  },
  async afterAll(this: Mocha.Context) {
    this.timeout(30_000);
    await stopHarness();
  },
};
