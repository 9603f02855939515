/**
 * What the agent's and the hub's OpenAPI 3.1 documents share: the JSON types, the schema helpers both
 * API schema modules use, the error envelope every error answer has (shared/errors.ts writes it, in one
 * place), the ticket fields a gate holds as the hub issued them, and the document's outer frame.
 */
import { readFileSync } from 'node:fs';
import { type TSchema, Type } from 'typebox';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
export const IsoTime = Type.String({ format: 'date-time' });
export const Closed = { additionalProperties: false } as const;

/** The inside of the envelope; also each failed item of a batch. */
export const ErrorBody = Type.Object(
  {
    code: Type.String({ description: 'Stable error code; see docs/errors.md' }),
    message: Type.String(),
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  Closed,
);

/** `{"error": {"code", "message", "details"?}}`: every error answer of both daemons. */
export const ErrorEnvelope = Type.Object({ error: ErrorBody }, Closed);

/**
 * The fields of a ticket as the hub issues it and a gate holds it, without `id` (first) and `status`
 * (typed differently by each side); spread them into an object schema in this order.
 */
export const TICKET_FIELDS = {
  holder: Type.String(),
  tier: Type.String(),
  seat: Nullable(Type.String()),
  gates: Type.Array(Type.String()),
  valid_from: IsoTime,
  valid_until: IsoTime,
};

/** Plain JSON: drops anything typebox keeps beside the schema keywords. */
export function plain(schema: unknown): Json {
  return JSON.parse(JSON.stringify(schema)) as Json;
}

export const schemaRef = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });

/** The version in package.json, or 0.0.0 where it cannot be read. */
function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

export interface OpenApiParts {
  title: string;
  description: string;
  tags: { name: string; description: string }[];
  paths: JsonObject;
  securitySchemes: JsonObject;
  schemas: JsonObject;
  /** The default security requirement of every operation. */
  security: Json[];
}

/** An OpenAPI 3.1 document around the given parts, its version that of package.json. */
export function openApiDocument(parts: OpenApiParts): JsonObject {
  return {
    openapi: '3.1.0',
    info: { title: parts.title, version: packageVersion(), description: parts.description },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    tags: parts.tags,
    paths: parts.paths,
    components: { securitySchemes: parts.securitySchemes, schemas: parts.schemas },
    security: parts.security,
  };
}
