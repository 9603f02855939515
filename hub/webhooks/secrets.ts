/**
 * Webhook signing secrets and Standard Webhooks signatures.
 *
 * Why this file: a subscriber verifies our webhooks with any Standard Webhooks library, so the bytes we
 * sign, the header format and the secret format must match the spec exactly; one slip (a re-serialised
 * body, a millisecond timestamp, a lenient base64 decode) and every delivery fails verification.
 *
 * - A secret is `whsec_` + canonical, padded base64 of 24 to 64 random bytes (Svix's range; the spec asks
 *   for at least 24). `parseSecret` refuses anything else rather than decoding it leniently, because
 *   Node's base64 decoder silently drops bad characters and a receiver's decoder would not.
 * - The signed content is `${id}.${timestamp}.${body}`, HMAC-SHA256 keyed with the decoded secret bytes,
 *   sent as `v1,<base64>`. The spec says id and timestamp must not contain `.` (else `a.b` + `c` and `a` +
 *   `b.c` sign the same bytes), so ids are tokens of [A-Za-z0-9_-] and the timestamp an integer in seconds.
 * - Rotation: the new secret signs at once and the old one keeps signing beside it for a grace period
 *   (default 24 hours, as Svix), so receivers can switch at their own pace. During the grace period the
 *   `webhook-signature` header holds one `v1,` entry per active secret, space-separated.
 */
import { createHmac, createSecretKey, type KeyObject, randomBytes } from 'node:crypto';
import { GatesyncError } from '../../shared/errors.ts';

export const SECRET_PREFIX = 'whsec_';
/** Bytes of key material a secret may hold (Svix accepts 24 to 64). */
export const MIN_SECRET_BYTES = 24;
export const MAX_SECRET_BYTES = 64;
export const DEFAULT_SECRET_BYTES = 32;
/** How long a replaced secret keeps signing beside the new one (milliseconds). */
export const DEFAULT_ROTATION_GRACE_MS = 24 * 60 * 60 * 1000;
/** A webhook-id: one token, never a `.` (it delimits the signed content), short enough for a header. */
export const WEBHOOK_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
/**
 * Timestamps at or above this are taken to be milliseconds by mistake (10^11 seconds is the year 5138).
 * A millisecond timestamp would fail every receiver's 5-minute tolerance check, so it is refused here.
 */
const MAX_TIMESTAMP_SECONDS = 1e11;

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function invalid(message: string): GatesyncError {
  return new GatesyncError('validation_failed', message);
}

/** A new secret: `whsec_` + base64 of `bytes` random bytes (24 to 64). */
export function generateSecret(bytes = DEFAULT_SECRET_BYTES): string {
  if (!Number.isInteger(bytes) || bytes < MIN_SECRET_BYTES || bytes > MAX_SECRET_BYTES) {
    throw invalid(
      `a webhook secret must hold ${MIN_SECRET_BYTES} to ${MAX_SECRET_BYTES} random bytes, got ${bytes}`,
    );
  }
  return SECRET_PREFIX + randomBytes(bytes).toString('base64');
}

/**
 * The key bytes of a `whsec_` secret. Throws `validation_failed` saying what is wrong; the message never
 * repeats the secret itself (it may end up in a log or an API error).
 */
export function parseSecret(secret: string): Buffer {
  if (typeof secret !== 'string' || !secret.startsWith(SECRET_PREFIX)) {
    throw invalid(`a webhook secret must start with "${SECRET_PREFIX}"`);
  }
  const encoded = secret.slice(SECRET_PREFIX.length);
  if (encoded.length === 0) throw invalid('the webhook secret is empty after "whsec_"');
  if (!BASE64.test(encoded)) {
    throw invalid(
      'the part of a webhook secret after "whsec_" must be standard base64 (A-Z a-z 0-9 + /, padded with =)',
    );
  }
  const key = Buffer.from(encoded, 'base64');
  // The pattern admits non-canonical encodings (stray bits in the last character); refuse them too, so the
  // secret we store is the one every decoder reads the same way.
  if (key.toString('base64') !== encoded) {
    throw invalid('the part of a webhook secret after "whsec_" is not canonical base64');
  }
  if (key.length < MIN_SECRET_BYTES || key.length > MAX_SECRET_BYTES) {
    throw invalid(
      `a webhook secret must decode to ${MIN_SECRET_BYTES} to ${MAX_SECRET_BYTES} bytes, got ${key.length}`,
    );
  }
  return key;
}

export interface SignInput {
  /** The `webhook-id`: the same on every attempt of one message. */
  id: string;
  /** The attempt's time in whole seconds since the epoch: fresh on every attempt. */
  timestamp: number;
  /** The exact body bytes that will be sent (as a string; signed as UTF-8). */
  body: string;
  /** Every secret that should sign, current first (see `activeSecrets`). */
  secrets: readonly string[];
}

function checkIdAndTimestamp(id: string, timestamp: number): void {
  if (typeof id !== 'string' || !WEBHOOK_ID_PATTERN.test(id)) {
    throw invalid(`a webhook-id must match ${WEBHOOK_ID_PATTERN.source}`);
  }
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw invalid(`a webhook-timestamp must be a whole number of seconds since the epoch, got ${timestamp}`);
  }
  if (timestamp >= MAX_TIMESTAMP_SECONDS) {
    throw invalid(`a webhook-timestamp is in seconds, got ${timestamp} (milliseconds?)`);
  }
}

/**
 * The `webhook-signature` header value: `v1,<base64 HMAC-SHA256>` for each secret, space-separated.
 * A secret listed twice signs once.
 */
export function signPayload({ id, timestamp, body, secrets }: SignInput): string {
  checkIdAndTimestamp(id, timestamp);
  if (typeof body !== 'string') throw invalid('a webhook body must be a string');
  if (secrets.length === 0) throw invalid('at least one webhook secret is needed to sign');
  const content = `${id}.${timestamp}.${body}`;
  if (secrets.length === 1) return `v1,${mac(secrets[0] as string, content)}`;
  const signatures: string[] = [];
  for (const secret of new Set(secrets)) signatures.push(`v1,${mac(secret, content)}`);
  return signatures.join(' ');
}

/**
 * Decoded keys of the secrets that signed lately, so that a delivery does not check and decode its
 * endpoint's secret again (a regular expression, a base64 decode and a re-encode). Bounded: a secret is
 * parsed again after the map is cleared.
 */
const keys = new Map<string, KeyObject>();
const MAX_KEYS = 1_000;

function mac(secret: string, content: string): string {
  let key = keys.get(secret);
  if (key === undefined) {
    key = createSecretKey(parseSecret(secret)); // a key object: no key set-up per signature
    if (keys.size >= MAX_KEYS) keys.clear();
    keys.set(secret, key);
  }
  return createHmac('sha256', key).update(content, 'utf8').digest('base64');
}

export type WebhookHeaders = {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
};

/** The three Standard Webhooks headers for one attempt. */
export function webhookHeaders(input: SignInput): WebhookHeaders {
  return {
    'webhook-id': input.id,
    'webhook-timestamp': String(input.timestamp),
    'webhook-signature': signPayload(input),
  };
}

/** A secret that was replaced and keeps signing until `expiresAt` (milliseconds since the epoch). */
export interface RetiredSecret {
  secret: string;
  expiresAt: number;
}

/** An endpoint's secrets: the current one and the replaced ones still inside their grace period. */
export interface SecretRing {
  current: string;
  previous: readonly RetiredSecret[];
}

/** A ring holding one secret (a new endpoint). */
export function newSecretRing(secret: string = generateSecret()): SecretRing {
  parseSecret(secret);
  return { current: secret, previous: [] };
}

/**
 * The secrets that sign at `now` (milliseconds): the current one first, then the retired ones whose grace
 * period has not ended, newest first. A retired secret stops signing at exactly `expiresAt`.
 */
export function activeSecrets(ring: SecretRing, now: number): string[] {
  if (ring.previous.length === 0) return [ring.current];
  const out = [ring.current];
  const live = ring.previous.filter((p) => p.expiresAt > now).sort((a, b) => b.expiresAt - a.expiresAt);
  for (const p of live) if (!out.includes(p.secret)) out.push(p.secret);
  return out;
}

/**
 * Replaces the current secret. The old one keeps signing for `graceMs` (0 ends it at once, as after a
 * leak); retired secrets already past their grace period are dropped. Rotating to a secret that is still
 * active is refused: it would shorten nothing and usually means the same value was pasted twice.
 */
export function rotateSecret(
  ring: SecretRing,
  now: number,
  options: { next?: string; graceMs?: number } = {},
): SecretRing {
  const next = options.next ?? generateSecret();
  const graceMs = options.graceMs ?? DEFAULT_ROTATION_GRACE_MS;
  if (!Number.isFinite(graceMs) || graceMs < 0) {
    throw invalid(`a rotation grace period must be a non-negative number of milliseconds, got ${graceMs}`);
  }
  parseSecret(next);
  if (activeSecrets(ring, now).includes(next)) {
    throw invalid('the new webhook secret is one that still signs; generate a fresh one');
  }
  const previous: RetiredSecret[] = ring.previous.filter((p) => p.expiresAt > now);
  if (graceMs > 0) previous.push({ secret: ring.current, expiresAt: now + graceMs });
  return { current: next, previous };
}
