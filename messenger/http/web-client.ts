import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type Koa from 'koa';

/**
 * The web chat client (built by `vite build` into dist/web) served by the web
 * process: `/` is index.html, `/assets/<file>` the hashed bundles. Every other
 * path falls through to the API untouched. Self-contained on purpose: it needs
 * no session, no router entry and nothing from the apps.
 *
 * `/favicon.ico` is `204 No Content`, public and cached for a day: the page
 * names its icon inline (`<link rel="icon" href="data:,">`, no request), but a
 * browser showing anything else of this origin (a JSON answer, /metrics) asks
 * for `/favicon.ico` on its own, and until 2026-12-07 that was a `401` in its
 * console. No icon is shipped: an empty answer is what the page uses too.
 */

/** Content-Security-Policy of the page: only our own scripts, styles and connections; no inline code, no framing. */
export const CLIENT_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "connect-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.js': 'application/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
  '.json': 'application/json; charset=utf-8',
};

// Vite names assets `<name>-<hash>.<ext>`: one flat folder, no separators, no dot-dot.
const ASSET_NAME = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}$/;

/** Where the built client is: dist/web, whether this runs compiled (dist/messenger/http) or from sources (messenger/http). */
export function webClientRoot(): string {
  const top = path.resolve(__dirname, '../..');
  // Never the sources' web/ folder: its index.html points at .ts files.
  return path.basename(top) === 'dist' ? path.join(top, 'web') : path.join(top, 'dist', 'web');
}

function notFound(ctx: Koa.Context): void {
  ctx.status = 404;
  ctx.body = { message: 'not-found' };
}

/** Serves GET/HEAD `/` and `/assets/*` from `root`; anything else goes on to the next middleware. */
export function webClient(opts: { root: string }): Koa.Middleware {
  const assets = path.join(opts.root, 'assets');
  return async function webClient(ctx, next) {
    if (ctx.path === '/favicon.ico' && (ctx.method === 'GET' || ctx.method === 'HEAD')) {
      (ctx.state as { operationId?: string }).operationId = 'webClientFavicon';
      ctx.set('Cache-Control', 'public, max-age=86400');
      ctx.status = 204;
      return;
    }
    const isPage = ctx.path === '/';
    const isAsset = ctx.path.startsWith('/assets/');
    if ((!isPage && !isAsset) || (ctx.method !== 'GET' && ctx.method !== 'HEAD')) return next();
    // Named in the access log and the request metrics like an operation.
    (ctx.state as { operationId?: string }).operationId = isPage ? 'webClientPage' : 'webClientAsset';
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('Referrer-Policy', 'no-referrer');

    if (isPage) {
      let html: Buffer;
      try {
        // Read on each request (it is small) so a rebuilt client is served without a restart.
        html = await fs.promises.readFile(path.join(opts.root, 'index.html'));
      } catch {
        return notFound(ctx); // not built: tests from sources, or `npm run build` not run
      }
      const etag = `"${createHash('sha256').update(html).digest('base64url').slice(0, 27)}"`;
      ctx.set('Cache-Control', 'no-cache');
      ctx.set('Content-Security-Policy', CLIENT_CSP);
      ctx.set('X-Frame-Options', 'DENY');
      ctx.set('ETag', etag);
      if (ctx.get('if-none-match') === etag) {
        ctx.status = 304;
        return;
      }
      ctx.status = 200;
      ctx.type = 'text/html; charset=utf-8';
      ctx.body = html;
      return;
    }

    const name = ctx.path.slice('/assets/'.length);
    const type = TYPES[path.extname(name)];
    if (!ASSET_NAME.test(name) || name.includes('..') || type === undefined) return notFound(ctx);
    let stat: fs.Stats;
    const file = path.join(assets, name);
    try {
      stat = await fs.promises.stat(file);
    } catch {
      return notFound(ctx);
    }
    if (!stat.isFile()) return notFound(ctx);
    // File names carry a content hash: a new build gets new names, so they never change.
    ctx.set('Cache-Control', 'public, max-age=31536000, immutable');
    ctx.status = 200;
    ctx.type = type;
    // HEAD: headers only; Koa sends no body, and no file is opened.
    if (ctx.method === 'GET') ctx.body = fs.createReadStream(file);
    ctx.length = stat.size;
  };
}
