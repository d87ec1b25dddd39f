import fs from 'node:fs';
import path from 'node:path';
import addFormats from 'ajv-formats';
import OpenAPIBackend, { type Operation } from 'openapi-backend';
import type { ErrorObject, ValidateFunction } from 'ajv';
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

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * The paths that need no session, from the operations whose `security` in
 * swagger.yml is empty (`security: []`), so the document, not a hand-kept
 * list, decides. A path parameter with an `enum` only opens those values
 * (`/docs/{file}` is public for the page's own files, nothing else). Any
 * method on a public path skips the session check (a wrong one is 405).
 */
export function publicPathMatcher(api: Api): (path: string) => boolean {
  const literal = new Set<string>();
  const patterns: RegExp[] = [];
  for (const op of api.getOperations()) {
    if (!Array.isArray(op.security) || op.security.length !== 0) continue;
    if (!op.path.includes('{')) {
      literal.add(op.path);
      continue;
    }
    const params = (op.parameters ?? []) as OpenAPIV3.ParameterObject[];
    const source = op.path
      .split(/(\{[^}]+\})/)
      .map((part) => {
        const name = /^\{([^}]+)\}$/.exec(part)?.[1];
        if (name === undefined) return escapeRegex(part);
        const schema = params.find((p) => p.in === 'path' && p.name === name)?.schema as OpenAPIV3.SchemaObject | undefined;
        const values = schema?.enum?.filter((v): v is string => typeof v === 'string');
        return values === undefined ? '[^/]+' : `(?:${values.map(escapeRegex).join('|')})`;
      })
      .join('');
    patterns.push(new RegExp(`^${source}$`));
  }
  return (path) => literal.has(path) || patterns.some((re) => re.test(path));
}

/** Operations whose answers may be cached, with the path parameter naming their chat (`x-cache-chat`). */
export function cacheableOperations(api: Api): Map<string, string> {
  const out = new Map<string, string>();
  for (const op of api.getOperations()) {
    const param = (op as unknown as Record<string, unknown>)['x-cache-chat'];
    if (op.operationId !== undefined && typeof param === 'string') out.set(op.operationId, param);
  }
  return out;
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
    ajvOpts: { allErrors: false, validateSchema: false, verbose: true },
    customizeAjv: (ajv) => {
      addFormats(ajv, ['date-time']);
      return ajv;
    },
  });
  await api.init();
  return api;
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
  private readonly queryNames = new Map<string, Set<string>>();
  /** The operations that take a request body (the only ones whose body is read). */
  readonly withBody: Set<string>;

  constructor(api: Api) {
    this.withBody = bodyOperations(api);
    for (const op of api.getOperations()) {
      if (op.operationId === undefined) continue;
      this.validators.set(op.operationId, api.validator.getRequestValidatorsForOperation(op.operationId));
      const params = (op.parameters ?? []) as OpenAPIV3.ParameterObject[];
      this.queryNames.set(op.operationId, new Set(params.filter((p) => p.in === 'query').map((p) => p.name)));
    }
  }

  /**
   * The first query parameter the operation declares whose value, percent-
   * decoded, is not UTF-8 (`%FF`), in the raw `querystring`; undefined when
   * there is none. Koa's parser turns such bytes into U+FFFD, so the
   * operation would run on a value nobody sent. A `%` without two hex digits
   * after it stays literal, as Koa reads it; undeclared parameters are
   * ignored, as they are anyway.
   */
  undecodableQuery(operationId: string, querystring: string): string | undefined {
    const names = this.queryNames.get(operationId);
    if (names === undefined || !querystring.includes('%')) return undefined;
    for (const pair of querystring.split('&')) {
      const eq = pair.indexOf('=');
      const name = strictDecode(eq < 0 ? pair : pair.slice(0, eq));
      if (name !== undefined && names.has(name) && eq >= 0 && strictDecode(pair.slice(eq + 1)) === undefined) return name;
    }
    return undefined;
  }

  /**
   * The query parameters the operation declares; others (cache busters such
   * as `_=1700000000`) are ignored, as unknown body fields are.
   */
  declaredQuery(operationId: string, query: Record<string, string | string[] | undefined>): Record<string, string | string[] | undefined> {
    const names = this.queryNames.get(operationId);
    const out: Record<string, string | string[] | undefined> = {};
    for (const [k, v] of Object.entries(query)) if (names?.has(k) === true) out[k] = v;
    return out;
  }

  /**
   * Why a body does not match the operation's request body schema (as
   * `check` sees it, with nothing else of the request), or undefined when it
   * does: the same rule for input that comes another way (a WebSocket `send`).
   */
  checkBody(operationId: string, body: unknown): string | undefined {
    for (const validate of this.validators.get(operationId) ?? []) {
      // openapi-backend compiles the body on its own, as the property `requestBody` of its input.
      const schema = validate.schema as { properties?: Record<string, unknown> } | undefined;
      if (schema?.properties?.requestBody === undefined) continue;
      if (!validate({ requestBody: body })) return violation(validate.errors?.[0]).detail;
    }
    return undefined;
  }

  /** Why the request does not match the operation's parameters and body schema, or undefined when it does. */
  check(operationId: string, req: RequestParts): Violation | undefined {
    const validators = this.validators.get(operationId) ?? [];
    const input: Record<string, unknown> = {
      path: { ...req.params },
      // Copied: ajv's type coercion writes into what it validates.
      query: { ...req.query },
      header: req.headers,
      cookie: {},
    };
    if (this.withBody.has(operationId)) input.requestBody = req.body;
    for (const validate of validators) {
      if (!validate(input)) return violation(validate.errors?.[0]);
    }
    return undefined;
  }
}

/** A query component percent-decoded, or undefined when its bytes are not UTF-8. */
function strictDecode(component: string): string | undefined {
  try {
    return decodeURIComponent(component.replace(/\+/g, ' ').replace(/%(?![0-9a-fA-F]{2})/g, '%25'));
  } catch {
    return undefined;
  }
}

/** What failed validation: where (path parameters, query, body) and a sentence for `detail`. */
export interface Violation {
  in: 'path' | 'query' | 'header' | 'body';
  detail: string;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** The rule a schema states, in words (`an integer from 1 to 1000`). */
export function describeSchema(schema: OpenAPIV3.SchemaObject | undefined): string {
  if (schema === undefined) return 'not allowed here';
  // A rule swagger.yml states in words (x-rule) beats one pieced together from keywords.
  const rule = (schema as Record<string, unknown>)['x-rule'];
  if (typeof rule === 'string') return rule;
  if (Array.isArray(schema.enum)) return `one of ${schema.enum.join(', ')}`;
  switch (schema.type) {
    case 'integer': {
      const { minimum: min, maximum: max } = schema;
      if (min !== undefined && max !== undefined) return `an integer from ${min} to ${max}`;
      if (min !== undefined) return `an integer of at least ${min}`;
      return 'an integer';
    }
    case 'string': {
      const parts = ['a string'];
      const { minLength: min, maxLength: max } = schema;
      if (min !== undefined && max !== undefined) parts.push(`of ${min} to ${plural(max, 'character')}`);
      else if (max !== undefined) parts.push(`of at most ${plural(max, 'character')}`);
      else if (min !== undefined) parts.push(`of at least ${plural(min, 'character')}`);
      if (schema.pattern === '\\S') parts.push('that is not only spaces');
      return parts.join(' ');
    }
    case 'object':
      return 'a JSON object';
    case 'array':
      return 'an array';
    default:
      return schema.type === undefined ? 'a valid value' : `a ${schema.type}`;
  }
}

function violation(err: ErrorObject | undefined): Violation {
  if (err === undefined) return { in: 'body', detail: 'the request does not match the operation' };
  const parts = err.instancePath.split('/').filter(Boolean);
  const where = parts[0] === 'requestBody' ? 'body' : ((parts[0] ?? 'body') as Violation['in']);
  if (err.keyword === 'required') {
    const missing = String((err.params as { missingProperty?: unknown }).missingProperty);
    return { in: where, detail: `${missing}: required` };
  }
  const name = parts.length > 1 ? parts.slice(1).join('.') : where;
  return { in: where, detail: `${name}: ${describeSchema(err.parentSchema as OpenAPIV3.SchemaObject | undefined)}` };
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

/**
 * Turns numbers into text in the named fields of a plain object body, as
 * written in the request (`raw`, from the body reader), never as a rounded
 * double: `12345678901234567890` stays that, `1e21` stays `1e21`, and `1e309`,
 * which JSON.parse makes Infinity, stays `1e309`.
 */
export function numbersToStrings(body: unknown, fields: string[] | undefined, raw: Map<string, string> | undefined): unknown {
  if (fields === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) return body;
  const obj = body as Record<string, unknown>;
  for (const f of fields) {
    const v = obj[f];
    if (typeof v !== 'number') continue;
    // Without the written token, only a finite double has decimal text worth keeping.
    const written = raw?.get(f) ?? (Number.isFinite(v) ? String(v) : undefined);
    if (written !== undefined) obj[f] = written;
  }
  return obj;
}

export type { Operation };
