/**
 * Checks real HTTP answers against an OpenAPI 3.1 document (the agent's or the hub's): makes the call,
 * finds the documented operation for its path, validates the body with ajv (JSON Schema 2020-12, with
 * formats) against the documented response schema, and remembers which operations were exercised, so
 * that a test can assert it called every one.
 */
import assert from 'node:assert/strict';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { Json, JsonObject } from '../../shared/openapi.ts';

export interface OpenApiDoc {
  openapi: string;
  paths: Record<string, Record<string, JsonObject & { responses: Record<string, JsonObject> }>>;
  components: { schemas: Record<string, Json> };
}

/** Inlines `#/components/schemas/...` references (neither daemon's schemas are recursive). */
function deref(doc: OpenApiDoc, node: Json): Json {
  if (Array.isArray(node)) return node.map((n) => deref(doc, n));
  if (node === null || typeof node !== 'object') return node;
  const r = node.$ref;
  if (typeof r === 'string') {
    const target = doc.components.schemas[r.replace('#/components/schemas/', '')];
    assert.ok(target !== undefined, `the document defines ${r}`);
    return deref(doc, target);
  }
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(node)) out[k] = deref(doc, v);
  return out;
}

/** Turns a documented path template into a regular expression matching real paths. */
function templateRegex(template: string): RegExp {
  const source = template
    .split(/(\{[^}]+\})/)
    .map((part) => (part.startsWith('{') ? '[^/]+' : part.replace(/[.*+?^$()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`);
}

/** One request, and the status it is meant to provoke. */
export interface Call {
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  /** With its query, if any. */
  path: string;
  /** Default: the checker's token; null: none. */
  token?: string | null;
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as it is, instead of `body`. */
  rawBody?: string;
  /** Default application/json, when there is a body. */
  contentType?: string;
  headers?: Record<string, string>;
  expect: number;
}

export interface Answer {
  /** Names the call in assertion messages. */
  label: string;
  /** The documented path template, as `template()` found it. */
  template: string;
  /** Lower case, as in the document. */
  method: string;
  status: number;
  /** The content type without parameters. */
  mediaType: string;
  /** Parsed JSON for application/json, else the text. */
  value: unknown;
}

export class OpenApiChecker {
  readonly #ajv = new Ajv2020({ strict: false, allErrors: true });
  readonly #templates: { template: string; re: RegExp }[];
  readonly #exercised = new Set<string>();

  /** `baseUrl`: the daemon the document came from; `token`: the bearer token calls carry by default. */
  constructor(
    readonly doc: OpenApiDoc,
    readonly baseUrl: string,
    readonly token: string,
  ) {
    addFormats.default(this.#ajv);
    this.#templates = Object.keys(doc.paths).map((p) => ({ template: p, re: templateRegex(p) }));
  }

  /** Makes the call, asserts its status, and checks the answer against the document. */
  async call<T = unknown>(c: Call): Promise<{ status: number; body: T }> {
    const headers: Record<string, string> = { ...c.headers };
    const token = c.token === undefined ? this.token : c.token;
    if (token !== null) headers.authorization = `Bearer ${token}`;
    let body: string | undefined;
    if (c.rawBody !== undefined) body = c.rawBody;
    else if (c.body !== undefined) body = JSON.stringify(c.body);
    if (body !== undefined) headers['content-type'] = c.contentType ?? 'application/json';
    const res = await fetch(this.baseUrl + c.path, { method: c.method, headers, body });
    const text = await res.text();
    const label = `${c.method} ${c.path.slice(0, 120)} -> ${res.status}`;
    assert.equal(res.status, c.expect, `${label}: ${text.slice(0, 300)}`);
    const mediaType = (res.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
    const value: unknown = mediaType === 'application/json' ? JSON.parse(text) : text;
    this.checkAnswer({
      label,
      template: this.template(c.path.split('?')[0] as string, label),
      method: c.method.toLowerCase(),
      status: res.status,
      mediaType,
      value,
    });
    return { status: res.status, body: value as T };
  }

  /** The documented path template a real path (without its query) falls under. */
  template(pathOnly: string, label: string): string {
    const match = this.#templates.find((tp) => tp.re.test(pathOnly));
    assert.ok(match, `${label}: the path is documented`);
    return match.template;
  }

  /** The answer's status and content type are documented for its operation, and its body is valid. */
  checkAnswer(a: Answer): void {
    const op = this.doc.paths[a.template]?.[a.method];
    assert.ok(op, `${a.label}: the method is documented`);
    const response = op.responses[String(a.status)];
    assert.ok(response, `${a.label}: the status is documented`);
    this.#exercised.add(`${a.method} ${a.template}`);
    const content = response.content as Record<string, { schema: Json }> | undefined;
    if (content === undefined) {
      assert.equal(a.value, '', `${a.label}: documented without a body`);
      return;
    }
    const media = content[a.mediaType];
    assert.ok(
      media,
      `${a.label}: content-type ${a.mediaType} is documented (${Object.keys(content).join(', ')})`,
    );
    this.validate(media.schema, a.value, a.label);
  }

  /** `value` is valid against `schema` (references into the document are followed). */
  validate(schema: Json, value: unknown, label: string): void {
    const validate = this.#ajv.compile(deref(this.doc, schema) as object);
    assert.ok(
      validate(value),
      `${label}: ${this.#ajv.errorsText(validate.errors)}\n${JSON.stringify(value).slice(0, 600)}`,
    );
  }

  /** The documented operations (`get /path`) that no checked answer belonged to. */
  unexercised(): string[] {
    return Object.entries(this.doc.paths)
      .flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`))
      .filter((op) => !this.#exercised.has(op));
  }
}
