import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..');
const README_MAX_LINES = 150;

/** README.md and every docs/*.md, as paths relative to the repository root. */
function markdownFiles(): string[] {
  const docs = fs.existsSync(path.join(ROOT, 'docs'))
    ? fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)
    : [];
  return ['README.md', ...docs.sort()];
}

/** The text outside fenced code blocks and inline code, where a link is a link. */
function prose(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```/gm, '').replace(/`[^`\n]*`/g, '');
}

/** Targets of `[text](target)` and `![alt](target)` links. */
function linkTargets(markdown: string): string[] {
  const targets: string[] = [];
  for (const m of prose(markdown).matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) targets.push(m[1]);
  return targets;
}

/** GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/`/g, '')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

function anchors(markdown: string): Set<string> {
  const found = new Set<string>();
  for (const m of markdown.replace(/^```[\s\S]*?^```/gm, '').matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) found.add(slug(m[1]));
  return found;
}

/** Every problem with the relative links of `file` (relative to `root`), as readable lines. */
function brokenLinks(file: string, root = ROOT): string[] {
  const text = fs.readFileSync(path.join(root, file), 'utf8');
  const problems: string[] = [];
  for (const target of linkTargets(text)) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
    const [rawPath, anchor] = target.split('#', 2);
    const resolved = rawPath === '' ? path.join(root, file) : path.resolve(path.dirname(path.join(root, file)), decodeURI(rawPath));
    const inside = path.relative(root, resolved);
    if (inside.startsWith('..') || path.isAbsolute(inside)) {
      problems.push(`${file}: ${target} points outside the repository`);
      continue;
    }
    if (!fs.existsSync(resolved)) {
      problems.push(`${file}: ${target} does not exist`);
      continue;
    }
    if (anchor !== undefined && resolved.endsWith('.md') && !anchors(fs.readFileSync(resolved, 'utf8')).has(anchor)) {
      problems.push(`${file}: ${target} names a heading that ${inside} does not have`);
    }
  }
  return problems;
}

describe('documentation', () => {
  it(`README.md is a short start: at most ${README_MAX_LINES} lines`, () => {
    const lines = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').split('\n').length;
    assert.ok(lines <= README_MAX_LINES, `README.md has ${lines} lines; move the long parts into docs/`);
  });

  it('every relative link in README.md and docs/*.md resolves to a file inside the repository', () => {
    const files = markdownFiles();
    assert.ok(files.length > 1, 'docs/ holds no .md files');
    assert.deepEqual(files.flatMap((f) => brokenLinks(f)), []);
  });

  it('the README links to every page in docs/', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const linked = new Set(linkTargets(readme).map((t) => t.split('#')[0]));
    const missing = markdownFiles().filter((f) => f !== 'README.md' && !linked.has(f));
    assert.deepEqual(missing, [], 'pages in docs/ that README.md does not link to');
  });

  it('docs/operations.md lists every make target the Makefile documents', () => {
    const makefile = fs.readFileSync(path.join(ROOT, 'Makefile'), 'utf8');
    const targets = [...makefile.matchAll(/^([a-z][a-z-]*):.*## /gm)].map((m) => m[1]);
    assert.ok(targets.length > 0, 'no documented targets found in the Makefile');
    const operations = fs.readFileSync(path.join(ROOT, 'docs/operations.md'), 'utf8');
    const missing = targets.filter((t) => !operations.includes(`| \`make ${t}\` |`));
    assert.deepEqual(missing, [], 'make targets missing from the table in docs/operations.md');
  });

  it('finds a broken link, a link out of the repository and a missing heading (the checker itself)', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'docs-test-'));
    const name = 'docs/x.md';
    try {
      fs.mkdirSync(path.join(root, 'docs'));
      fs.writeFileSync(
        path.join(root, name),
        '# Title\n\n[ok](x.md#title) [gone](nope.md) [out](../../outside.md) [anchor](#missing)\n\n```\n[in code](ignored.md)\n```\n',
      );
      assert.deepEqual(brokenLinks(name, root), [
        `${name}: nope.md does not exist`,
        `${name}: ../../outside.md points outside the repository`,
        `${name}: #missing names a heading that ${name} does not have`,
      ]);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
