/**
 * Every error code gatesync puts on the wire or in a log, in one place.
 *
 * A code is a stable lower_snake_case string that clients may switch on; the message is for people and may
 * change. `status` is the HTTP status the code maps to. docs/errors.md is generated from this table's
 * descriptions by hand: keep them in step (a test checks the form of every entry).
 */
export const ERROR_CODES = {
  bad_request: { status: 400, description: 'The request could not be understood.' },
  invalid_json: { status: 400, description: 'The body is not valid JSON.' },
  validation_failed: {
    status: 400,
    description: 'The body, query or path did not match the schema; details name the field.',
  },
  invalid_id: { status: 400, description: 'An id is not a token of 1 to 64 of [A-Za-z0-9_-].' },
  unauthorized: { status: 401, description: 'No bearer token, or one that is not known.' },
  forbidden: { status: 403, description: 'The token is known but may not do this.' },
  not_found: { status: 404, description: 'No such resource.' },
  ticket_exists: { status: 409, description: 'A ticket with this id already exists in this venue.' },
  revision_conflict: {
    status: 409,
    description: 'Another change to the same ticket won the race; read it again and retry.',
  },
  already_revoked: { status: 409, description: 'The ticket is already revoked.' },
  job_running: { status: 409, description: 'A recover or redrive job is already running for this endpoint.' },
  endpoint_exists: { status: 409, description: 'A webhook endpoint with this id already exists.' },
  idempotency_in_progress: {
    status: 409,
    description: 'A request with this Idempotency-Key is still being processed.',
  },
  payload_too_large: { status: 413, description: 'The body is larger than the configured limit.' },
  unsupported_media_type: { status: 415, description: 'The body must be application/json.' },
  idempotency_key_reused: {
    status: 422,
    description: 'This Idempotency-Key was used before with a different request body.',
  },
  webhook_url_refused: {
    status: 422,
    description:
      'The webhook URL may not be called: its scheme, form or an address it resolves to is refused; the message says which.',
  },
  too_many_requests: { status: 429, description: 'Slow down; see Retry-After.' },
  internal: { status: 500, description: 'An unexpected error; it has been logged.' },
  nats_unavailable: {
    status: 503,
    description:
      'The message bus cannot be reached right now; the change may still apply when it returns, so retry with the same Idempotency-Key or id.',
  },
  not_ready: { status: 503, description: 'The service is starting or stopping.' },
  // Not HTTP-facing: raised inside the processes and logged or counted.
  config_invalid: { status: 500, description: 'A setting is missing or wrong; the message names it.' },
  bad_signature: { status: 400, description: 'A signature did not verify against a trusted key.' },
  unknown_key: { status: 400, description: 'A signature names a key id that is not trusted.' },
  malformed: { status: 400, description: 'A message or token could not be decoded.' },
  nats_server_missing: {
    status: 500,
    description: 'No nats-server binary was found for the embedded default.',
  },
} as const satisfies Record<string, { status: number; description: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface GatesyncErrorOptions {
  cause?: unknown;
  details?: Record<string, unknown>;
  /** Overrides the code's default HTTP status (rarely needed). */
  status?: number;
}

export class GatesyncError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: GatesyncErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'GatesyncError';
    this.code = code;
    this.status = options.status ?? ERROR_CODES[code].status;
    this.details = options.details;
  }
}

export interface ErrorEnvelope {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

/** The one mapping from an error to the wire envelope. Unknown errors never leak their message. */
export function toErrorEnvelope(err: unknown): { status: number; body: ErrorEnvelope } {
  if (err instanceof GatesyncError) {
    const body: ErrorEnvelope = { error: { code: err.code, message: err.message } };
    if (err.details !== undefined) body.error.details = err.details;
    return { status: err.status, body };
  }
  return { status: 500, body: { error: { code: 'internal', message: ERROR_CODES.internal.description } } };
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
