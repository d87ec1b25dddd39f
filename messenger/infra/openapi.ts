import fs from 'node:fs';
import path from 'node:path';
import addFormats from 'ajv-formats';
import OpenAPIBackend, { type Context, type Operation } from 'openapi-backend';
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

/** Loads and checks swagger.yml; request validation follows it from here on. */
export async function createApi(): Promise<Api> {
  const api = new OpenAPIBackend({
    definition: swaggerPath(),
    strict: false,
    validate: true,
    coerceTypes: true,
    ignoreTrailingSlashes: false,
    ajvOpts: { allErrors: false },
    customizeAjv: (ajv) => {
      addFormats(ajv, ['date-time']);
      return ajv;
    },
  });
  // Sessions are checked by the auth app's middleware before routing (401 for
  // any non-public path, existing or not); by the time a request reaches
  // openapi-backend its security requirement is already met.
  api.registerSecurityHandler('session', () => true);
  await api.init();
  return api;
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

export type { Context, Operation };
