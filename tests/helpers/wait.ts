/**
 * Polls `check` every `everyMs` until it returns true, for at most `ms`;
 * fails with `what` after that. Tests wait for a condition with this rather
 * than sleeping for a guessed time.
 */
export async function waitUntil(what: string, check: () => Promise<boolean>, ms = 10_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
