/**
 * Mutation score from StrykerJS event-recorder folders, for runs that were
 * stopped part way (they write no report) or split over several runs:
 *
 *   npx tsx tests/mutation/score-events.ts <events dir> [<events dir> ...] [--list]
 *
 * Each folder is one run's `reports/mutation/events/` (kept with
 * `--reporters ...,event-recorder`). A mutant is known by its file, place,
 * mutator and replacement; a later folder's result replaces an earlier one's,
 * so a re-run of some files or lines after new tests overrides the first run
 * there. For each file, the mutants of the last run that planned it are
 * counted (a file changed between runs is taken from the later run alone).
 * Prints, per file and in all: killed, timed out, survived, without
 * coverage, not tested yet, ignored, and the score over the tested mutants
 * ((killed + timed out) / (killed + timed out + survived + no coverage)).
 * `--list` also prints every survivor and mutant without coverage.
 */
import fs from 'node:fs';
import path from 'node:path';

interface Mutant {
  id: string;
  fileName: string;
  mutatorName: string;
  replacement?: string;
  location: { start: { line: number; column: number } };
  status?: string;
}

const args = process.argv.slice(2);
const list = args.includes('--list');
const dirs = args.filter((a) => a !== '--list');
if (dirs.length === 0) {
  process.stderr.write('usage: npx tsx tests/mutation/score-events.ts <events dir> [...] [--list]\n');
  process.exit(2);
}

const rel = (file: string) => file.replace(/^.*?\/messenger\//, 'messenger/');
const keyOf = (m: Mutant, line: number, column: number) => `${rel(m.fileName)}:${line}:${column} ${m.mutatorName} ${m.replacement ?? ''}`;

/** file -> (mutant key -> status), from the last folder that planned the file. */
const byFile = new Map<string, Map<string, string>>();
for (const dir of dirs) {
  const names = fs.readdirSync(dir).sort();
  const planFile = names.find((n) => n.endsWith('-onMutationTestingPlanReady.json'));
  if (planFile === undefined) throw new Error(`${dir}: no onMutationTestingPlanReady event`);
  const plan = (JSON.parse(fs.readFileSync(path.join(dir, planFile), 'utf8')) as { mutantPlans: { mutant: Mutant }[] }).mutantPlans;
  const status = new Map<string, string>();
  for (const n of names.filter((x) => x.endsWith('-onMutantTested.json'))) {
    const m = JSON.parse(fs.readFileSync(path.join(dir, n), 'utf8')) as Mutant;
    status.set(m.id, m.status ?? 'Unknown');
  }
  const planned = new Map<string, Map<string, string>>();
  for (const { mutant } of plan) {
    // Plan locations are 0-based, like the keys; tested events are 1-based, so the plan's are used for both.
    const file = rel(mutant.fileName);
    if (!planned.has(file)) planned.set(file, new Map());
    (planned.get(file) as Map<string, string>).set(keyOf(mutant, mutant.location.start.line, mutant.location.start.column), status.get(mutant.id) ?? 'Untested');
  }
  for (const [file, mutants] of planned) {
    const before = byFile.get(file);
    const sameFile = before !== undefined && [...mutants.keys()].every((k) => before.has(k));
    if (before === undefined || !sameFile) {
      // New, or changed since (its mutants moved): only when this run planned the whole file.
      if (before === undefined || mutants.size >= before.size * 0.5) byFile.set(file, mutants);
      continue;
    }
    for (const [k, s] of mutants) if (s !== 'Untested') before.set(k, s);
  }
}

const COLS = ['Killed', 'Timeout', 'Survived', 'NoCoverage', 'Untested', 'Ignored'] as const;
const total = new Map<string, number>();
const score = (c: Map<string, number>) => {
  const det = (c.get('Killed') ?? 0) + (c.get('Timeout') ?? 0);
  const all = det + (c.get('Survived') ?? 0) + (c.get('NoCoverage') ?? 0);
  return all === 0 ? '-' : ((100 * det) / all).toFixed(1);
};
const row = (name: string, c: Map<string, number>) =>
  `| ${name} | ${COLS.map((k) => c.get(k) ?? 0).join(' | ')} | ${score(c)} |`;
const out = [`| file | ${COLS.join(' | ')} | score |`, `|---|${COLS.map(() => '---:').join('|')}|---:|`];
for (const [file, mutants] of [...byFile].sort()) {
  const c = new Map<string, number>();
  for (const s of mutants.values()) {
    c.set(s, (c.get(s) ?? 0) + 1);
    total.set(s, (total.get(s) ?? 0) + 1);
  }
  out.push(row(file, c));
}
out.push(row('**all**', total));
process.stdout.write(`${out.join('\n')}\n`);
if (list) {
  for (const [, mutants] of [...byFile].sort()) {
    for (const [k, s] of mutants) if (s === 'Survived' || s === 'NoCoverage') process.stdout.write(`${s}\t${k}\n`);
  }
}
