import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../messenger/config';

const ROOT = path.resolve(__dirname, '..');
const read = (file: string) => fs.readFileSync(path.join(ROOT, file), 'utf8');

/** Every environment variable messenger/config.ts reads. */
function settingNames(): string[] {
  const names = [...read('messenger/config.ts').matchAll(/r\.(?:str|int|bool|bytes|url|optional)\('([A-Z0-9_]+)'/g)].map((m) => m[1]);
  return [...new Set(names)].sort();
}

/** The KEY=value lines of an env file (compose's format: no quotes, no inline comments). */
function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2];
  }
  return env;
}

describe('deployment files', () => {
  it('finds the settings config.ts reads (the check below is not vacuous)', () => {
    const names = settingNames();
    assert.ok(names.length > 20);
    assert.ok(names.includes('METRICS_TOKEN') && names.includes('SHUTDOWN_TIMEOUT_MS'));
  });

  for (const file of ['deploy/.env.prod', 'deploy/.env.test']) {
    it(`${file} names every setting, set or commented out`, () => {
      const text = read(file);
      const missing = settingNames().filter((n) => !new RegExp(`^(# )?${n}=`, 'm').test(text));
      assert.deepEqual(missing, []);
    });

    it(`${file} is a configuration the service accepts, in the services mode`, () => {
      const config = loadConfig(parseEnvFile(read(file)));
      assert.ok(config.databaseUrl?.startsWith('postgres://'));
      assert.ok(config.redisUrl !== undefined && config.rmqUrl !== undefined);
      assert.equal(config.host, '0.0.0.0');
    });
  }

  it('deploy/.env.prod keeps SHUTDOWN_TIMEOUT_MS under the stop grace period of docker-compose.yml', () => {
    const timeout = Number(parseEnvFile(read('deploy/.env.prod')).SHUTDOWN_TIMEOUT_MS);
    const grace = /stop_grace_period: (\d+)s/.exec(read('docker-compose.yml'));
    assert.ok(grace, 'docker-compose.yml sets stop_grace_period');
    assert.ok(timeout < Number(grace[1]) * 1000, `${timeout} ms is not under ${grace[1]} s`);
  });

  it('deploy/.env.example, copied to .env, runs exactly what no settings run (every app on)', () => {
    const example = parseEnvFile(read('deploy/.env.example'));
    assert.deepEqual(loadConfig(example), loadConfig({}));
    // Switching auth off in the copy leaves the per-account apps out, as it does with no file.
    assert.deepEqual(loadConfig({ ...example, AUTH_DISABLED: '1' }), loadConfig({ AUTH_DISABLED: '1' }));
  });

  it('deploy/.env.example documents METRICS_TOKEN', () => {
    assert.match(read('deploy/.env.example'), /^# METRICS_TOKEN=/m);
  });

  it('make help lists every target of the Makefile, each with its explanation', () => {
    const makefile = read('Makefile');
    const phony = /^\.PHONY: (.+)$/m.exec(makefile);
    assert.ok(phony);
    const targets = phony[1].split(/\s+/);
    for (const t of ['run-dev', 'run-prod', 'run-local', 'test', 'test-services', 'lint', 'typecheck', 'migrate', 'bench', 'docker-build']) {
      assert.ok(targets.includes(t), `${t} is not a target`);
    }
    const help = execFileSync('make', ['--no-print-directory', '-s', 'help'], { cwd: ROOT, encoding: 'utf8' });
    for (const t of targets) assert.match(help, new RegExp(`^  ${t} +\\S`, 'm'), `make help does not list ${t}`);
  });

  it('make help says test-browser covers the web client as well as /docs (tests/browser holds both)', () => {
    const help = execFileSync('make', ['--no-print-directory', '-s', 'help'], { cwd: ROOT, encoding: 'utf8' });
    assert.match(help, /^ {2}test-browser +.*web client.*\/docs/m);
    assert.ok(fs.readdirSync(path.join(ROOT, 'tests/browser')).some((f) => f.startsWith('client')));
  });

  it('ErrorCode in messenger/errors.ts lists each wire code once', () => {
    const source = read('messenger/errors.ts');
    const union = /export type ErrorCode =([^;]+);/.exec(source);
    assert.ok(union);
    const codes = [...union[1].matchAll(/'([a-z-]+)'/g)].map((m) => m[1]);
    assert.ok(codes.length > 10);
    assert.deepEqual(codes.filter((c, i) => codes.indexOf(c) !== i), []);
  });
});

describe('make: the node_modules step', () => {
  /**
   * A copy of the Makefile beside package.json and package-lock.json that are
   * newer than node_modules (as after a checkout or pull), with an `npm` on
   * PATH that records its arguments and answers `npm ls` with `lsExit`.
   */
  function runMake(opts: { link: boolean; lsExit: number }) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'opsx-make-'));
    const shared = fs.mkdtempSync(path.join(os.tmpdir(), 'opsx-shared-nm-'));
    try {
      fs.copyFileSync(path.join(ROOT, 'Makefile'), path.join(dir, 'Makefile'));
      fs.writeFileSync(path.join(shared, 'sentinel'), 'installed');
      if (opts.link) fs.symlinkSync(shared, path.join(dir, 'node_modules'));
      else fs.cpSync(shared, path.join(dir, 'node_modules'), { recursive: true });
      const old = new Date(Date.now() - 3600_000);
      fs.utimesSync(path.join(dir, 'node_modules'), old, old);
      fs.writeFileSync(path.join(dir, 'package.json'), '{}');
      fs.writeFileSync(path.join(dir, 'package-lock.json'), '{}');
      const bin = path.join(dir, 'fakebin');
      fs.mkdirSync(bin);
      // Records each call; `ci` empties node_modules as the real one does.
      fs.writeFileSync(
        path.join(bin, 'npm'),
        `#!/bin/sh\necho "$*" >> ${dir}/npm-calls\ncase "$1" in ls) exit ${opts.lsExit};; ci) rm -rf node_modules/*;; esac\n`,
        { mode: 0o755 },
      );
      const res = spawnSync('make', ['--no-print-directory', 'node_modules'], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
      });
      const calls = fs.existsSync(path.join(dir, 'npm-calls')) ? fs.readFileSync(path.join(dir, 'npm-calls'), 'utf8').trim().split('\n') : [];
      return { status: res.status, stderr: res.stderr, calls, sentinel: fs.existsSync(path.join(shared, 'sentinel')), shared };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(shared, { recursive: true, force: true });
    }
  }

  it('does not reinstall when the installed packages satisfy package.json, however old node_modules is', () => {
    const r = runMake({ link: true, lsExit: 0 });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.calls, ['ls']);
    assert.ok(r.sentinel, 'the linked node_modules was emptied');
  });

  it('never runs npm ci through a node_modules link (it would empty the folder of another checkout): stops naming it', () => {
    const r = runMake({ link: true, lsExit: 1 });
    assert.notEqual(r.status, 0);
    assert.deepEqual(r.calls, ['ls']);
    assert.ok(r.sentinel, 'the linked node_modules was emptied');
    assert.match(r.stderr, /node_modules links to \S*opsx-shared-nm-\S*, whose packages do not match package\.json.*run npm ci in the checkout/);
  });

  it('runs npm ci when its own node_modules does not satisfy package.json', () => {
    const r = runMake({ link: false, lsExit: 1 });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.calls, ['ls', 'ci --no-audit --no-fund']);
  });
});
