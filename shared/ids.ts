/**
 * Identifier rules shared by every subject, URL and database key.
 *
 * Venue, ticket, agent and check-in ids become NATS subject tokens, so they must never contain `.`, `*`,
 * `>` or whitespace. One pattern for all of them keeps the rule in one place.
 */
import { randomFillSync } from 'node:crypto';
import { GatesyncError } from './errors.ts';

export const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const ID_PATTERN_SOURCE = '^[A-Za-z0-9_-]{1,64}$';

export function isValidId(value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value);
}

/** Throws `invalid_id` naming the field when the value is not a valid id token. */
export function assertId(value: unknown, field: string): string {
  if (!isValidId(value)) {
    throw new GatesyncError('invalid_id', `${field} must match ${ID_PATTERN_SOURCE}`, {
      details: { field },
    });
  }
  return value;
}

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'; // Crockford base32: no I, L, O, U

/**
 * A sortable, random id: 10 chars of millisecond time then 16 random chars (80 bits), like a ULID.
 * Time-ordered ids keep SQLite indexes and JetStream subjects append-friendly.
 */
export function newId(prefix = ''): string {
  let time = Date.now();
  let head = '';
  for (let i = 0; i < 10; i++) {
    head = ALPHABET[time % 32] + head;
    time = Math.floor(time / 32);
  }
  if (poolAt + 16 > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  let tail = '';
  for (let i = poolAt; i < poolAt + 16; i++) tail += ALPHABET[(pool[i] as number) % 32];
  poolAt += 16;
  return prefix + head + tail;
}

// Random bytes are drawn 4 KiB at a time: one call into the CSPRNG per 256 ids instead of one per id
// (a scan's id cost more in that call than in everything else newId does). Each byte is used once.
const pool = Buffer.alloc(4096);
let poolAt = pool.length;
