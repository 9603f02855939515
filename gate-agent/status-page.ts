/**
 * The gate status page for venue staff: GET /status.
 *
 * A browser cannot put a bearer token on a page load, so the page itself is static and holds no data:
 * it is served without authentication, asks once for a scanner token (kept in the tab's
 * sessionStorage), and reads everything from GET /v1/status with `Authorization: Bearer`, once a
 * second. Its CSS and JS are inline (the venue may be offline: no CDN), and a Content-Security-Policy
 * allows exactly those two blocks by hash and network access only to this agent.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';

const HTML = readFileSync(new URL('./status-page.html', import.meta.url), 'utf8');

function inlineHashes(tag: 'script' | 'style'): string[] {
  const re = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g');
  return [...HTML.matchAll(re)].map(
    (m) =>
      `'sha256-${createHash('sha256')
        .update(m[1] ?? '')
        .digest('base64')}'`,
  );
}

const CSP = [
  "default-src 'none'",
  `script-src ${inlineHashes('script').join(' ')}`,
  `style-src ${inlineHashes('style').join(' ')}`,
  "connect-src 'self'",
  'img-src data:',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export function registerStatusPage(app: FastifyInstance): void {
  app.get('/status', async (_request, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-store')
      .send(HTML),
  );
}
