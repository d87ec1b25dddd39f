import Router from '@koa/router';
import type { Api } from './openapi';
import type { OperationId } from '../types';

/** A matched operation and its decoded path parameters. */
export interface RouteMatch {
  operationId: OperationId;
  params: Record<string, string>;
}

/** Where a request goes: an operation, or why none (unknown path, wrong method). */
export type RouteResult = RouteMatch | 'not-found' | 'method-not-allowed';

/** Literal characters of a path template (parameters removed): more literal paths are tried first. */
function literalLength(template: string): number {
  return template.replace(/\{[^}]+\}/g, '').length;
}

/**
 * Routes requests to swagger.yml's operations with @koa/router's matcher
 * (path-to-regexp), built once at start-up. It only decides where a request
 * goes; authentication, body reading and validation follow in the pipeline,
 * so an unknown path without a session is 401, not 404. Tests use the same
 * router to find the operation whose schema a response must match.
 */
export class OperationRouter {
  private readonly router = new Router();
  /** Operations on literal paths (no parameters), by path and method: most requests end here. */
  private readonly exact = new Map<string, Map<string, OperationId>>();

  constructor(api: Api) {
    const ops = api
      .getOperations()
      .filter((op) => op.operationId !== undefined)
      .sort((a, b) => literalLength(b.path) - literalLength(a.path));
    for (const op of ops) {
      const template = op.path.replace(/\{([^}]+)\}/g, ':$1');
      const method = op.method.toUpperCase();
      // @koa/router answers HEAD wherever GET is registered.
      this.router.register(template, [method], [async () => {}], { name: `${method} ${op.operationId as string}` });
      if (!op.path.includes('{')) {
        const byMethod = this.exact.get(op.path) ?? new Map<string, OperationId>();
        byMethod.set(method, op.operationId as OperationId);
        if (method === 'GET' && !byMethod.has('HEAD')) byMethod.set('HEAD', op.operationId as OperationId);
        this.exact.set(op.path, byMethod);
      }
    }
  }

  /** The operation for `method path`, or why there is none. */
  match(method: string, urlPath: string): RouteResult {
    // A literal path with its method needs no pattern matching (the same answer @koa/router gives).
    const literal = this.exact.get(urlPath)?.get(method);
    if (literal !== undefined) return { operationId: literal, params: {} };
    const m = this.router.match(urlPath, method);
    const layer = m.pathAndMethod[0];
    if (layer === undefined) return m.path.length > 0 ? 'method-not-allowed' : 'not-found';
    const operationId = (layer.name as string).split(' ')[1] as OperationId;
    // Layer.params decodes each value (a malformed escape is kept as sent).
    return { operationId, params: layer.params(urlPath, layer.captures(urlPath), {}) };
  }

  /** The methods a path answers (for the `Allow` header of a 405). */
  allowed(urlPath: string): string[] {
    const m = this.router.match(urlPath, 'GET');
    const methods = new Set<string>();
    for (const layer of m.path) for (const method of layer.methods) methods.add(method);
    return [...methods];
  }
}
