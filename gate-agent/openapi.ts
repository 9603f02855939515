/**
 * The OpenAPI 3.1 document of the agent's HTTP API, served at GET /openapi.json. Its schemas are the
 * typebox schemas the routes use (gate-agent/api-schemas.ts), copied as plain JSON Schema (OpenAPI 3.1
 * uses JSON Schema 2020-12 as it is). test/agent-openapi.test.ts calls every route it lists against a
 * running agent and checks each real answer against it.
 */
import type { TSchema } from 'typebox';
import { ErrorEnvelope, type Json, openApiDocument, plain, schemaRef as ref } from '../shared/openapi.ts';
import {
  AgentStatus,
  CodeParams,
  CodeQuery,
  Ok,
  PreviewResponse,
  RecentReject,
  ScanBody,
  ScanResponse,
  TicketSummary,
} from './api-schemas.ts';

function json(description: string, schemaName: string): Json {
  return { description, content: { 'application/json': { schema: ref(schemaName) } } };
}

const error = (description: string): Json => json(description, 'Error');

const SCANNER = [{ scannerToken: [] }];

function property(schema: TSchema, name: string): Json {
  const props = (plain(schema) as { properties: Record<string, Json> }).properties;
  const p = props[name];
  if (p === undefined) throw new Error(`schema has no property ${name}`);
  return p;
}

function build(): Json {
  return openApiDocument({
    title: 'gatesync gate agent',
    description:
      "The gate agent's local API for scanner apps and venue staff. It answers from the gate's own " +
      'SQLite store, online or offline. See docs/api.md.',
    tags: [
      { name: 'scans', description: 'Deciding and recording scans' },
      { name: 'status', description: "The gate's health" },
    ],
    paths: {
      '/v1/scans': {
        post: {
          operationId: 'scan',
          tags: ['scans'],
          summary: 'Decide and record one scan',
          description:
            'Answered only after the check-in is on disk. 200 for every decision, admit or reject: a ' +
            'rejected ticket is not an HTTP error.',
          security: SCANNER,
          requestBody: {
            required: true,
            content: { 'application/json': { schema: ref('ScanBody') } },
          },
          responses: {
            '200': json('The decision and the recorded check-in', 'ScanResponse'),
            '400': error('The body is not valid (validation_failed, invalid_json)'),
            '401': error('Missing or unknown scanner token'),
            '403': error("`scanner` is not the token's own scanner"),
            '413': error('Body over 16 KiB'),
            '415': error('Not application/json'),
            '500': error('The local database could not write; nothing was recorded'),
          },
        },
      },
      '/v1/tickets/{code}': {
        get: {
          operationId: 'previewScan',
          tags: ['scans'],
          summary: 'What a scan would decide now, without recording it',
          security: SCANNER,
          parameters: [
            {
              name: 'code',
              in: 'path',
              required: true,
              description: 'A QR token or a ticket id (percent-encoded where needed)',
              schema: property(CodeParams, 'code'),
            },
            {
              name: 'direction',
              in: 'query',
              required: false,
              description: 'Default "in"',
              schema: property(CodeQuery, 'direction'),
            },
          ],
          responses: {
            '200': json('The decision a scan would get', 'PreviewResponse'),
            '400': error('An invalid or unknown query parameter'),
            '401': error('Missing or unknown scanner token'),
          },
        },
      },
      '/v1/status': {
        get: {
          operationId: 'status',
          tags: ['status'],
          summary: "The gate's link, sync, outbox and recent scans",
          security: SCANNER,
          responses: {
            '200': json('The gate as it is now', 'AgentStatus'),
            '401': error('Missing or unknown scanner token'),
          },
        },
      },
      '/metrics': {
        get: {
          operationId: 'metrics',
          tags: ['status'],
          summary: 'Prometheus metrics (text exposition format)',
          security: SCANNER,
          responses: {
            '200': {
              description: 'Prometheus text',
              content: { 'text/plain': { schema: { type: 'string' } } },
            },
            '401': error('Missing or unknown scanner token'),
          },
        },
      },
      '/healthz': {
        get: {
          operationId: 'healthz',
          tags: ['status'],
          summary: 'Liveness',
          security: [],
          responses: { '200': json('The process is alive', 'Ok') },
        },
      },
      '/readyz': {
        get: {
          operationId: 'readyz',
          tags: ['status'],
          summary: 'Readiness: the local store is open (NATS is not needed to answer scans)',
          security: [],
          responses: {
            '200': json('Ready to answer scans', 'Ok'),
            '503': error('not_ready: the store is not open'),
          },
        },
      },
      '/status': {
        get: {
          operationId: 'statusPage',
          tags: ['status'],
          summary: 'The gate status page for venue staff (HTML, no data of its own)',
          description:
            'A static page; it asks for a scanner token and reads GET /v1/status with it every second.',
          security: [],
          responses: {
            '200': {
              description: 'The page',
              content: { 'text/html': { schema: { type: 'string' } } },
            },
          },
        },
      },
      '/openapi.json': {
        get: {
          operationId: 'openapi',
          tags: ['status'],
          summary: 'This document',
          security: [],
          responses: {
            '200': {
              description: 'OpenAPI 3.1',
              content: { 'application/json': { schema: { type: 'object' } } },
            },
          },
        },
      },
    },
    securitySchemes: {
      scannerToken: {
        type: 'http',
        scheme: 'bearer',
        description:
          "A scanner's own token, configured as GATESYNC_SCANNER_TOKENS=<scanner-id>:<token>,...; it names " +
          'the scanner every check-in is recorded for.',
      },
    },
    schemas: {
      ScanBody: plain(ScanBody),
      ScanResponse: plain(ScanResponse),
      PreviewResponse: plain(PreviewResponse),
      TicketSummary: plain(TicketSummary),
      AgentStatus: plain(AgentStatus),
      RecentReject: plain(RecentReject),
      Error: plain(ErrorEnvelope),
      Ok: plain(Ok),
    },
    security: SCANNER,
  });
}

/** Built once: the document never changes while the agent runs. */
export const AGENT_OPENAPI: Json = build();
