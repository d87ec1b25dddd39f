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
  const patterns: RegExp[] = [];
  for (const op of api.getOperations()) {
    if (!Array.isArray(op.security) || op.security.length !== 0) continue;
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
  return (path) => patterns.some((re) => re.test(path));
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
    ajvOpts: { allErrors: false, validateSchema: false },
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
