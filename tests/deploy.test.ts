import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
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
