import fs from 'node:fs';
import path from 'node:path';
import type { EventName, Reactor } from '../events';
import type { App, AppModule, Deps } from '../types';

/** Apps that are always on and cannot be named in APPS. */
const ALWAYS_ON = new Set(['core', 'ops']);

/** Preferred order of the apps this build ships with; any other app folder follows, by name. */
const ORDER = ['auth', 'chats', 'messages', 'conversations', 'search', 'throttling', 'caching'];

function hasIndex(dir: string): boolean {
  return ['index.ts', 'index.js'].some((f) => fs.existsSync(path.join(dir, f)));
}

/**
 * The app folders under `dir` (default: this folder): each subfolder with an
 * index module is one app, named after the folder. Adding an app is adding a
 * folder whose index exports `app: AppModule`.
 */
export function appDirectories(dir: string = __dirname, includeAlwaysOn = false): string[] {
  const names = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && hasIndex(path.join(dir, e.name)))
    .map((e) => e.name)
    .filter((n) => includeAlwaysOn || !ALWAYS_ON.has(n));
  const rank = (n: string) => (ORDER.includes(n) ? ORDER.indexOf(n) : ORDER.length);
  return names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** Loads the app modules under `dir` (each folder's index exports `app`). */
export function loadAppModules(dir: string = __dirname): Map<string, AppModule> {
  const out = new Map<string, AppModule>();
  for (const name of appDirectories(dir, true)) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(path.join(dir, name)) as { app?: AppModule };
    const app = mod.app;
    if (app === undefined || typeof app.create !== 'function' || app.name !== name) {
      throw new Error(`messenger/apps/${name}: its index must export \`app\` with name "${name}" and a create function`);
    }
    out.set(name, app);
  }
  return out;
}

/**
 * Registers every app's reactions to domain events; returns the undo. Used by
 * the web app and by the roles that publish events without serving HTTP (the
 * synchronizer), so a reaction (cache invalidation, read markers) runs
 * wherever the event is published.
 */
export function mountReactors(deps: Deps, apps: App[]): () => void {
  const undo: (() => void)[] = [];
  for (const app of apps) {
    for (const [name, fn] of Object.entries(app.reactors ?? {})) {
      undo.push(deps.events.react(name as EventName, fn as Reactor<EventName>));
    }
  }
  return () => undo.forEach((u) => u());
}
