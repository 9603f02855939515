/**
 * Bearer tokens are stored and compared as sha256 hex digests, never as themselves. A module of its own,
 * without Fastify, so that the agent's HTTP front thread (gate-agent/http-front.ts) checks tokens with
 * the same function as the app.
 */
import { hash, timingSafeEqual } from 'node:crypto';

/** sha256 hex of a token: what is stored and compared, never the token itself. */
export function hashToken(token: string): string {
  // crypto.hash: one call, no Hash object (it runs on every authenticated request).
  return hash('sha256', token, 'hex');
}

/** Constant-time comparison of two sha256 hex digests. */
export function sameHash(a: string, b: string): boolean {
  const ab = Buffer.from(a, 'hex');
  const bb = Buffer.from(b, 'hex');
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}
