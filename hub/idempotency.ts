/**
 * Idempotency-Key handling, as Stripe does it: the first request with a key runs and its response is
 * kept for 24 hours; a retry with the same key and the same body gets that response again (header
 * `Idempotent-Replayed: true`) and never a second ticket; the same key with another body is 422.
 *
 * Records live in a JetStream KV bucket, so every hub process sees them. `kv.create` is the lock: only
 * one request can create the record, a concurrent twin sees it pending and gets 409. Large responses
 * (a batch of 10,000 tickets is megabytes) are stored in parts under the record's key, because a NATS
 * message is limited to about 1 MB by default.
 *
 * States: (none) -> pending -> done (stored response) | (none) again when the request failed on our side.
 */
import { createHash } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import { GatesyncError } from '../shared/errors.ts';

interface IdempotencyRecord {
  state: 'pending' | 'done';
  body_hash: string;
  started_at: number;
  status?: number;
  parts?: number;
}

export interface StoredResponse {
  status: number;
  body: unknown;
}

const PART_BYTES = 512 * 1024;
/** A pending record older than this is taken to be abandoned (its hub died) and may be taken over. */
const PENDING_TIMEOUT_MS = 120_000;

/** JSON with object keys sorted, so the same body with its fields in another order hashes the same. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

export function requestHash(method: string, path: string, body: unknown): string {
  return createHash('sha256').update(`${method} ${path}\n`).update(canonicalJson(body)).digest('hex');
}

/**
 * The id a ticket gets when the request carried an Idempotency-Key but no id: derived from the caller,
 * the key and the ticket's index in the request. A retry after a 5xx (when the record was dropped but
 * the ticket may have been published) then finds the same ticket instead of minting a second one.
 */
export function derivedTicketId(caller: string, idempotencyKey: string, index: number): string {
  const digest = createHash('sha256').update(`${caller}\n${idempotencyKey}\n${index}`).digest('base64url');
  return `T${digest.slice(0, 32)}`;
}

export class IdempotencyStore {
  constructor(private readonly kv: KV) {}

  /**
   * Runs `exec` at most once per (caller, key). Responses with status >= 500 are not stored, so the
   * client can retry them.
   */
  async run(
    caller: string,
    idempotencyKey: string,
    bodyHash: string,
    exec: () => Promise<StoredResponse>,
  ): Promise<StoredResponse & { replayed: boolean }> {
    if (idempotencyKey.length < 1 || idempotencyKey.length > 255) {
      throw new GatesyncError('validation_failed', 'Idempotency-Key must be 1 to 255 characters', {
        details: { field: 'headers/idempotency-key' },
      });
    }
    const key = `idem.${createHash('sha256').update(`${caller}\n${idempotencyKey}`).digest('hex')}`;
    const record: IdempotencyRecord = { state: 'pending', body_hash: bodyHash, started_at: Date.now() };
    let revision: number;
    try {
      revision = await this.kv.create(key, JSON.stringify(record));
    } catch {
      const existing = await this.kv.get(key);
      if (existing === null || existing.operation !== 'PUT') {
        // Deleted between our create and get: a failed first attempt. Run it now.
        revision = await this.kv.put(key, JSON.stringify(record));
      } else {
        const prev = JSON.parse(existing.string()) as IdempotencyRecord;
        if (prev.body_hash !== bodyHash) {
          throw new GatesyncError(
            'idempotency_key_reused',
            'this Idempotency-Key was already used with a different request',
          );
        }
        if (prev.state === 'done') return { ...(await this.readResponse(key, prev)), replayed: true };
        if (Date.now() - prev.started_at < PENDING_TIMEOUT_MS) {
          throw new GatesyncError(
            'idempotency_in_progress',
            'a request with this Idempotency-Key is in progress',
          );
        }
        try {
          revision = await this.kv.update(key, JSON.stringify(record), existing.revision);
        } catch {
          throw new GatesyncError(
            'idempotency_in_progress',
            'a request with this Idempotency-Key is in progress',
          );
        }
      }
    }
    let response: StoredResponse;
    try {
      response = await exec();
    } catch (err: unknown) {
      // Client errors are answers too (the same request will fail the same way); our own failures are not.
      if (err instanceof GatesyncError && err.status < 500 && err.code !== 'revision_conflict') {
        await this.store(key, record, revision, { status: err.status, body: { error: errorBody(err) } });
      } else {
        await this.kv.delete(key).catch(() => undefined);
      }
      throw err;
    }
    if (response.status >= 500) await this.kv.delete(key).catch(() => undefined);
    else await this.store(key, record, revision, response);
    return { ...response, replayed: false };
  }

  private async store(key: string, record: IdempotencyRecord, revision: number, res: StoredResponse) {
    const bytes = Buffer.from(JSON.stringify(res.body));
    const parts = Math.max(1, Math.ceil(bytes.length / PART_BYTES));
    for (let i = 0; i < parts; i++) {
      await this.kv.put(`${key}.p${i}`, bytes.subarray(i * PART_BYTES, (i + 1) * PART_BYTES));
    }
    const done: IdempotencyRecord = { ...record, state: 'done', status: res.status, parts };
    await this.kv.update(key, JSON.stringify(done), revision);
  }

  private async readResponse(key: string, rec: IdempotencyRecord): Promise<StoredResponse> {
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < (rec.parts ?? 0); i++) {
      const e = await this.kv.get(`${key}.p${i}`);
      if (e === null) throw new GatesyncError('internal', 'stored idempotent response is incomplete');
      chunks.push(e.value);
    }
    return { status: rec.status ?? 200, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown };
  }
}

function errorBody(err: GatesyncError): Record<string, unknown> {
  return err.details === undefined
    ? { code: err.code, message: err.message }
    : { code: err.code, message: err.message, details: err.details };
}
