/**
 * Ed25519 signing and verification with key ids (node:crypto).
 *
 * Events: the hub signs the exact msgpack bytes it publishes, prefixed with a context string so that a
 * signature made for an event can never be passed off as a QR token's and vice versa (domain separation).
 * The signature and key id travel in NATS headers (`Gs-Sig`, `Gs-Kid`).
 *
 * Key material on disk: a signing key file is JSON `{ kid, private_key, public_key }` where private_key is a
 * PKCS#8 DER in base64 and public_key the raw 32-byte key in base64url. Trusted public keys are configured
 * as `kid:base64url` pairs, several at once during rotation.
 */
import {
  createPrivateKey,
  createPublicKey,
  sign as cryptoSign,
  verify as cryptoVerify,
  generateKeyPairSync,
  type KeyObject,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import { GatesyncError } from './errors.ts';
import { isValidId } from './ids.ts';

export const SIG_HEADER = 'Gs-Sig';
export const KID_HEADER = 'Gs-Kid';

export const EVENT_CONTEXT = Buffer.from('gatesync-event-v1\n');
export const TOKEN_CONTEXT = Buffer.from('gatesync-token-v1\n');

export interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  /** Raw public key, base64url (43 chars). */
  publicKey: string;
}

export interface SigningKeyFile {
  kid: string;
  private_key: string;
  public_key: string;
}

export interface PublicKeyInfo {
  kid: string;
  /** Raw 32-byte public key, base64url. */
  publicKey: string;
  key: KeyObject;
}

export function generateSigningKey(kid: string): SigningKeyFile {
  if (!isValidId(kid)) throw new GatesyncError('config_invalid', `key id "${kid}" is not a valid id`);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  return { kid, private_key: der.toString('base64'), public_key: rawPublicKey(publicKey) };
}

function rawPublicKey(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new Error('not an Ed25519 key');
  return jwk.x;
}

export function parseSigningKey(file: SigningKeyFile): SigningKey {
  if (!isValidId(file.kid)) throw new GatesyncError('config_invalid', 'signing key file has no valid kid');
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({
      key: Buffer.from(file.private_key, 'base64'),
      format: 'der',
      type: 'pkcs8',
    });
  } catch (err: unknown) {
    throw new GatesyncError('config_invalid', 'signing key file holds no valid Ed25519 private key', {
      cause: err,
    });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new GatesyncError('config_invalid', 'signing key is not Ed25519');
  }
  return { kid: file.kid, privateKey, publicKey: rawPublicKey(createPublicKey(privateKey)) };
}

export function loadSigningKeyFile(path: string): SigningKey {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err: unknown) {
    throw new GatesyncError('config_invalid', `cannot read signing key file ${path}`, { cause: err });
  }
  const f = parsed as Partial<SigningKeyFile>;
  if (typeof f.kid !== 'string' || typeof f.private_key !== 'string') {
    throw new GatesyncError('config_invalid', `signing key file ${path} lacks kid or private_key`);
  }
  return parseSigningKey({ kid: f.kid, private_key: f.private_key, public_key: f.public_key ?? '' });
}

export function publicKeyFromRaw(kid: string, raw: string): PublicKeyInfo {
  if (!isValidId(kid)) throw new GatesyncError('config_invalid', `trusted key id "${kid}" is not a valid id`);
  if (!/^[A-Za-z0-9_-]{43}$/.test(raw)) {
    throw new GatesyncError('config_invalid', `trusted key ${kid} is not 32 bytes of base64url`);
  }
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw }, format: 'jwk' });
  return { kid, publicKey: raw, key };
}

/** Parses `kid:base64url,kid2:base64url`. */
export function parseTrustedKeys(spec: string): Map<string, PublicKeyInfo> {
  const keys = new Map<string, PublicKeyInfo>();
  for (const part of spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const idx = part.indexOf(':');
    if (idx < 1) throw new GatesyncError('config_invalid', `trusted key "${part}" is not kid:base64url`);
    const info = publicKeyFromRaw(part.slice(0, idx), part.slice(idx + 1));
    keys.set(info.kid, info);
  }
  return keys;
}

export function signBytes(key: SigningKey, context: Buffer, data: Uint8Array): Buffer {
  return cryptoSign(null, Buffer.concat([context, data]), key.privateKey);
}

export function verifyBytes(
  key: KeyObject,
  context: Buffer,
  data: Uint8Array,
  signature: Uint8Array,
): boolean {
  try {
    return cryptoVerify(null, Buffer.concat([context, data]), key, signature);
  } catch {
    // A malformed signature (wrong length) is simply not valid.
    return false;
  }
}

export type VerifyOutcome = 'ok' | 'unknown_key' | 'bad_signature';

export function verifySigned(
  trusted: ReadonlyMap<string, PublicKeyInfo>,
  kid: string | undefined,
  context: Buffer,
  data: Uint8Array,
  signature: Uint8Array | undefined,
): VerifyOutcome {
  if (kid === undefined || signature === undefined) return 'bad_signature';
  const info = trusted.get(kid);
  if (info === undefined) return 'unknown_key';
  return verifyBytes(info.key, context, data, signature) ? 'ok' : 'bad_signature';
}
