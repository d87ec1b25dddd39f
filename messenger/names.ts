/**
 * The comparison key of an account name: Unicode compatibility
 * normalisation (NFKC: fullwidth `ａｌｉｃｅ` is `alice`), without the
 * zero-width joiners a name may hold (ZWJ, ZWNJ: where one shows nothing,
 * `د‌انا` would pass for `دانا`), and case folding (upper-casing then
 * lower-casing, so `ß` and `ss`, `Σ` and `ς` meet). Two names with one key
 * are one account: it is unique, logins and look-ups find the account by it,
 * and the per-name login limit counts by it. The name itself is stored and
 * shown as typed.
 */
export function nameKey(name: string): string {
  return name.normalize('NFKC').replace(/[\u200C\u200D]/g, '').toUpperCase().toLowerCase().normalize('NFKC');
}
