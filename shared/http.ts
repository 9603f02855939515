/**
 * The HTTP plumbing both daemons share: a Fastify instance whose every error, including Fastify's own
 * (bad JSON, too large, wrong media type, schema validation, unknown route), leaves as the one envelope
 * `{"error": {"code", "message", "details"?}}`, is logged, and is counted; plus bearer-token checks in
 * constant time.
 *
 * Fastify is used for its routing, body limits and JSON-schema validation (ajv, compiled once per
 * route), which is faster and stricter than hand-written checks; see docs/architecture.md.
 */
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { Counter } from 'prom-client';
import { ERROR_CODES, type ErrorCode, type ErrorEnvelope, GatesyncError, toErrorEnvelope } from './errors.ts';
import type { Logger } from './logger.ts';

export interface ErrorAnswer {
  status: number;
  body: ErrorEnvelope;
}

export interface HttpServerOptions {
  logger: Logger;
  /** Bytes. */
  bodyLimit: number;
  /** Counts every error answer by code. Labels: code. */
  errorCounter?: Counter<'code'>;
  /** Why the daemon is not ready (503 on /readyz), or undefined when it is. /healthz is always 200. */
  notReadyReason: () => string | undefined;
}

/** Errors of the NATS client that mean "the bus is unreachable right now": 503, retry later. */
const NATS_UNAVAILABLE = new Set([
  'TimeoutError',
  'ConnectionError',
  'ClosedConnectionError',
  'DrainingConnectionError',
  'NoRespondersError',
  'RequestError',
  'JetStreamNotEnabled',
]);

/** A NATS client error becomes `nats_unavailable` (503); anything else is returned unchanged. */
export function asHttpError(err: unknown): unknown {
  if (err instanceof Error && NATS_UNAVAILABLE.has(err.name)) {
    return new GatesyncError('nats_unavailable', ERROR_CODES.nats_unavailable.description, { cause: err });
  }
  return err;
}

function fastifyErrorCode(err: FastifyError): ErrorCode {
  if (NATS_UNAVAILABLE.has(err.name)) return 'nats_unavailable';
  if (err.validation !== undefined) return 'validation_failed';
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'payload_too_large';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'unsupported_media_type';
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return 'invalid_json';
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return 'bad_request';
    default:
      break;
  }
  if (err instanceof SyntaxError) return 'invalid_json';
  if (err.statusCode === 413) return 'payload_too_large';
  if (err.statusCode === 415) return 'unsupported_media_type';
  if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) return 'bad_request';
  return 'internal';
}

/**
 * The error envelope for an error of a request, logged (error for 5xx, warning for 4xx) and counted:
 * what every error answer of a server made by createHttpServer goes through.
 */
export function answerError(
  opts: Pick<HttpServerOptions, 'logger' | 'errorCounter'>,
  err: FastifyError | GatesyncError,
  method: string,
  url: string,
): ErrorAnswer {
  let gsErr: GatesyncError;
  if (err instanceof GatesyncError) {
    gsErr = err;
  } else {
    const code = fastifyErrorCode(err);
    const details: Record<string, unknown> = {};
    if (err.validation !== undefined) {
      const first = err.validation[0];
      details.field = `${err.validationContext ?? 'body'}${first?.instancePath ?? ''}`;
      if (first?.params !== undefined) details.params = first.params;
    }
    const message =
      code === 'validation_failed'
        ? `${err.validationContext ?? 'body'}${err.validation?.[0]?.instancePath ?? ''} ${err.validation?.[0]?.message ?? 'is invalid'}`
        : code === 'internal' || code === 'nats_unavailable'
          ? ERROR_CODES[code].description
          : err.message;
    gsErr = new GatesyncError(code, message, {
      cause: err,
      ...(Object.keys(details).length > 0 ? { details } : {}),
    });
  }
  const { status, body } = toErrorEnvelope(gsErr);
  const logFields = { method: method, url: url, status, code: body.error.code };
  if (status >= 500) opts.logger.error({ ...logFields, err }, 'request failed');
  else opts.logger.warn({ ...logFields, message: body.error.message }, 'request rejected');
  opts.errorCounter?.inc({ code: body.error.code });
  return { status, body };
}

/** Milliseconds a stopping server waits for busy connections before it cuts them. */
const CLOSE_GRACE_MS = 2_000;

export function createHttpServer(opts: HttpServerOptions): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: opts.bodyLimit,
    // Requests in flight when a stop begins are answered normally (graceful drain).
    return503OnClosing: false,
    // The scanners and integrators send ids in paths; keep them exact.
    routerOptions: { ignoreTrailingSlash: false, caseSensitive: true, maxParamLength: 1024 },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  });

  // A stop must not wait on clients that keep a connection busy (a status page polling every second, a
  // dashboard stream): once closing, every answer says `Connection: close`, and connections still open
  // after a grace period are cut. Requests in flight are still answered.
  let closing = false;
  app.addHook('preClose', (done) => {
    closing = true;
    const timer = setTimeout(() => app.server.closeAllConnections(), CLOSE_GRACE_MS);
    timer.unref();
    done();
  });
  // Callback style, not async: this runs on every answer, and an async hook costs a promise per request.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });

  // JSON only: anything else is 415 rather than a string that fails validation later.
  app.removeContentTypeParser('text/plain');

  app.setErrorHandler((err: FastifyError | GatesyncError, request, reply) => {
    const { status, body } = answerError(opts, err, request.method, request.url);
    void reply.status(status).type('application/json').send(body);
  });

  app.setNotFoundHandler((request, reply) => {
    const body = { error: { code: 'not_found', message: `no route for ${request.method} ${request.url}` } };
    opts.logger.warn({ method: request.method, url: request.url, status: 404 }, 'request rejected');
    opts.errorCounter?.inc({ code: 'not_found' });
    void reply.status(404).send(body);
  });

  app.get('/healthz', async () => ({ ok: true }));
  app.get('/readyz', async () => {
    const reason = opts.notReadyReason();
    if (reason !== undefined) throw new GatesyncError('not_ready', reason);
    return { ok: true };
  });

  return app;
}

export { hashToken, sameHash } from './token-hash.ts';

/** The bearer token of a request, or throws `unauthorized`. */
export function bearerToken(request: FastifyRequest): string {
  const header = request.headers.authorization;
  if (header === undefined || !header.startsWith('Bearer ') || header.length < 8) {
    throw new GatesyncError('unauthorized', 'missing bearer token: send Authorization: Bearer <token>');
  }
  return header.slice(7).trim();
}
