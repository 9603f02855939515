/**
 * The compact signed token printed in a ticket's QR code.
 *
 *   GS1.<base64url(msgpack [kid, venue, ticket, valid_from_s, valid_until_s, gates])>.<base64url(sig)>
 *
 * The signature is Ed25519 over TOKEN_CONTEXT + "GS1." + payload-part, so a gate can admit a ticket it
 * has never synced (bought a minute ago while the venue is offline) and reject a forged one with no lookup.
 * Times are whole seconds to keep the QR code small (about 150 characters).
 */
import { decode, encode } from './codec.ts';
import { GatesyncError } from './errors.ts';
import { isValidId } from './ids.ts';
import { type PublicKeyInfo, type SigningKey, signBytes, TOKEN_CONTEXT, verifyBytes } from './signing.ts';

export const TOKEN_PREFIX = 'GS1.';

export interface QrClaims {
  kid: string;
  venue: string;
  ticket: string;
  /** Milliseconds since the epoch (stored as seconds in the token). */
  valid_from: number;
  valid_until: number;
  gates: string[];
}

export function isQrToken(code: string): boolean {
  return code.startsWith(TOKEN_PREFIX);
}

export function signQrToken(key: SigningKey, claims: Omit<QrClaims, 'kid'>): string {
  const payload = encode([
    key.kid,
    claims.venue,
    claims.ticket,
    Math.floor(claims.valid_from / 1000),
    Math.ceil(claims.valid_until / 1000),
    claims.gates,
  ]);
  const head = TOKEN_PREFIX + Buffer.from(payload).toString('base64url');
  const sig = signBytes(key, TOKEN_CONTEXT, Buffer.from(head));
  return `${head}.${sig.toString('base64url')}`;
}

export interface ParsedQrToken {
  claims: QrClaims;
  /** The signed part ("GS1.<payload>") and the signature, for a later verify. */
  signed: Buffer;
  signature: Buffer;
}

/** Parses without verifying. Throws `malformed` when the token has the wrong shape. */
export function parseQrToken(code: string): ParsedQrToken {
  const bad = (why: string): never => {
    throw new GatesyncError('malformed', `QR token ${why}`);
  };
  if (!code.startsWith(TOKEN_PREFIX) || code.length > 1024) bad('has the wrong prefix or length');
  const dot = code.lastIndexOf('.');
  if (dot <= TOKEN_PREFIX.length) bad('has no signature');
  const head = code.slice(0, dot);
  const b64 = /^[A-Za-z0-9_-]+$/;
  const payloadPart = head.slice(TOKEN_PREFIX.length);
  const sigPart = code.slice(dot + 1);
  if (!b64.test(payloadPart) || !b64.test(sigPart)) bad('is not base64url');
  const signature = Buffer.from(sigPart, 'base64url');
  if (signature.length !== 64) bad('signature has the wrong length');
  let arr: unknown;
  try {
    arr = decode(Buffer.from(payloadPart, 'base64url'));
  } catch {
    bad('payload does not decode');
  }
  if (!Array.isArray(arr) || arr.length !== 6) bad('payload has the wrong shape');
  const [kid, venue, ticket, from, until, gates] = arr as unknown[];
  if (!isValidId(kid) || !isValidId(venue) || !isValidId(ticket)) bad('payload has bad ids');
  if (!Number.isSafeInteger(from) || !Number.isSafeInteger(until)) bad('payload has a bad validity window');
  if (!Array.isArray(gates) || !gates.every((g) => isValidId(g))) bad('payload has bad gates');
  return {
    claims: {
      kid: kid as string,
      venue: venue as string,
      ticket: ticket as string,
      valid_from: (from as number) * 1000,
      valid_until: (until as number) * 1000,
      gates: gates as string[],
    },
    signed: Buffer.from(head),
    signature,
  };
}

export function verifyQrToken(parsed: ParsedQrToken, trusted: ReadonlyMap<string, PublicKeyInfo>): boolean {
  const info = trusted.get(parsed.claims.kid);
  if (info === undefined) return false;
  return verifyBytes(info.key, TOKEN_CONTEXT, parsed.signed, parsed.signature);
}
