import fs from 'node:fs';
import path from 'node:path';
import addFormats from 'ajv-formats';
import OpenAPIBackend, { type Operation } from 'openapi-backend';
import type { ValidateFunction } from 'ajv';
import type { OpenAPIV3 } from 'openapi-types';

export type Api = OpenAPIBackend;

/** Finds swagger.yml at the repository root, from sources or from dist/. */
export function swaggerPath(): string {
  for (const up of ['../..', '../../..']) {
    const p = path.resolve(__dirname, up, 'swagger.yml');
    if (fs.existsSync(p)) return p;
  }
  throw new Error('swagger.yml not found next to package.json');
}

/** Loads, checks and compiles swagger.yml: its validators decide what a valid request is. */
export async function createApi(): Promise<Api> {
  const api = new OpenAPIBackend({
    definition: swaggerPath(),
    strict: false,
    validate: true,
    // Quick start-up compiles validators lazily: only the request validators are
    // used (RequestValidator compiles them once below); precompiling every
    // response validator too cost ~30 MB per worker. swagger.yml itself is
    // checked against the OpenAPI 3.0 schema by the test suite.
    quick: true,
    coerceTypes: true,
    ignoreTrailingSlashes: false,
    // openapi-backend makes an Ajv instance per validator; checking each schema against
    // the JSON Schema meta-schema would compile that meta-schema in every one of them.
    ajvOpts: { allErrors: false, validateSchema: false },
    customizeAjv: (ajv) => {
      addFormats(ajv, ['date-time']);
      return ajv;
    },
  });
  await api.init();
  return api;
}

/** A matched operation and its decoded path parameters. */
export interface RouteMatch {
  operationId: string;
  params: Record<string, string>;
}

interface Route {
  regex: RegExp;
  names: string[];
  byMethod: Map<string, string>;
}

/** Where a request goes: an operation, or why none (unknown path, wrong method). */
export type RouteResult = RouteMatch | 'not-found' | 'method-not-allowed';

function decode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Routes requests to swagger.yml operations with tables built once at start-up.
 * (openapi-backend's own matcher rebuilds its operation list on every request,
 * which cost more than the whole of a `/ping` answer.)
 */
export class OperationRouter {
  private readonly exact = new Map<string, Map<string, string>>();
  private readonly templated: Route[] = [];

  constructor(api: Api) {
    for (const op of api.getOperations()) {
      if (op.operationId === undefined) continue;
      const method = op.method.toUpperCase();
      if (!op.path.includes('{')) {
        const m = this.exact.get(op.path) ?? new Map<string, string>();
        m.set(method, op.operationId);
        this.exact.set(op.path, m);
        continue;
      }
      const names: string[] = [];
      const source = op.path
        .split(/(\{[^}]+\})/)
        .map((part) => {
          const name = /^\{([^}]+)\}$/.exec(part);
          if (name === null) return part.replace(/[.*+?^$()|[\]\\]/g, '\\$&');
          names.push(name[1]);
          return '([^/]+)';
        })
        .join('');
      const regex = new RegExp(`^${source}$`);
      let route = this.templated.find((r) => r.regex.source === regex.source);
      if (route === undefined) {
        route = { regex, names, byMethod: new Map() };
        this.templated.push(route);
      }
      route.byMethod.set(method, op.operationId);
    }
    // A literal segment wins over a parameter: /v1/chats/search/... before /v1/chats/{chat_id}/...
    this.templated.sort((a, b) => b.regex.source.split('([^/]+)').join('').length - a.regex.source.split('([^/]+)').join('').length);
  }

  /** The operation for `method path`, or why there is none. */
  match(method: string, urlPath: string): RouteResult {
    const exact = this.exact.get(urlPath);
    if (exact !== undefined) {
      const opId = exact.get(method) ?? (method === 'HEAD' ? exact.get('GET') : undefined);
      return opId === undefined ? 'method-not-allowed' : { operationId: opId, params: {} };
    }
    let pathKnown = false;
    for (const route of this.templated) {
      const m = route.regex.exec(urlPath);
      if (m === null) continue;
      const opId = route.byMethod.get(method);
      if (opId === undefined) {
        pathKnown = true;
        continue;
      }
      const params: Record<string, string> = {};
      route.names.forEach((name, i) => (params[name] = decode(m[i + 1])));
      return { operationId: opId, params };
    }
    return pathKnown ? 'method-not-allowed' : 'not-found';
  }
}

/** The request parts swagger.yml validates. */
export interface RequestParts {
  params: Record<string, string>;
  query: Record<string, string | string[] | undefined>;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** Validates requests with openapi-backend's validators, compiled once per operation from swagger.yml. */
export class RequestValidator {
  private readonly validators = new Map<string, ValidateFunction<unknown>[]>();
  /** The operations that take a request body (the only ones whose body is read). */
  readonly withBody: Set<string>;

  constructor(api: Api) {
    this.withBody = bodyOperations(api);
    for (const op of api.getOperations()) {
      if (op.operationId === undefined) continue;
      this.validators.set(op.operationId, api.validator.getRequestValidatorsForOperation(op.operationId));
    }
  }

  /** True when the request matches the operation's parameters and body schema. */
  valid(operationId: string, req: RequestParts): boolean {
    const validators = this.validators.get(operationId) ?? [];
    if (validators.length === 0) return true;
    const input: Record<string, unknown> = {
      path: { ...req.params },
      // Copied: ajv's type coercion writes into what it validates.
      query: { ...req.query },
      header: req.headers,
      cookie: {},
    };
    if (this.withBody.has(operationId)) input.requestBody = req.body;
    for (const validate of validators) if (!validate(input)) return false;
    return true;
  }
}

/**
 * For each operation, the top-level body fields declared as strings. The
 * original accepted a JSON number where a string was expected
 * (`{"chat_name": 123}`); those are converted to decimal text before validation.
 */
export function stringFields(api: Api): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const op of api.getOperations()) {
    const body = op.requestBody as OpenAPIV3.RequestBodyObject | undefined;
    const schema = body?.content?.['application/json']?.schema as OpenAPIV3.SchemaObject | undefined;
    const props = schema?.properties ?? {};
    const names = Object.entries(props)
      .filter(([, s]) => (s as OpenAPIV3.SchemaObject).type === 'string')
      .map(([name]) => name);
    if (names.length > 0 && op.operationId) out.set(op.operationId, names);
  }
  return out;
}

/** The operations that take a request body; any other operation's body is left unread. */
function bodyOperations(api: Api): Set<string> {
  return new Set(api.getOperations().filter((op) => op.requestBody !== undefined && op.operationId).map((op) => op.operationId as string));
}

/** Converts finite numbers to their decimal text in the named fields of a plain object body. */
export function numbersToStrings(body: unknown, fields: string[] | undefined): unknown {
  if (fields === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) return body;
  const obj = body as Record<string, unknown>;
  for (const f of fields) {
    const v = obj[f];
    if (typeof v === 'number' && Number.isFinite(v)) obj[f] = String(v);
  }
  return obj;
}

export type { Operation };
