/**
 * A static HTML page with its CSS and JS inline, as the agent's status page and the hub's dashboard are
 * served: the venue may be offline, so no CDN, and a Content-Security-Policy allows exactly the page's
 * own <script> and <style> blocks, by sha256 hash, and network access only to `connectSrc`.
 *
 * The hashes are taken once from the HTML as it is read, so editing the page cannot leave a stale policy.
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';

export interface StaticPage {
  html: string;
  /** The security and caching headers the page is served with. */
  headers: Record<string, string>;
}

/** The CSP source expressions (`'sha256-…'`) of every inline block of one tag. */
function inlineHashes(html: string, tag: 'script' | 'style'): string[] {
  const re = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g');
  return [...html.matchAll(re)].map(
    (m) =>
      `'sha256-${createHash('sha256')
        .update(m[1] ?? '')
        .digest('base64')}'`,
  );
}

/** `connectSrc`: where the page's fetch() calls may go; by default only the server that served it. */
export function staticPage(html: string, connectSrc = "'self'"): StaticPage {
  const csp = [
    "default-src 'none'",
    `script-src ${inlineHashes(html, 'script').join(' ')}`,
    `style-src ${inlineHashes(html, 'style').join(' ')}`,
    `connect-src ${connectSrc}`,
    'img-src data:',
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return {
    html,
    headers: {
      'content-security-policy': csp,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
    },
  };
}

/** GET `path`: the page, without authentication (it holds no data of its own). */
export function registerStaticPage(app: FastifyInstance, path: string, page: StaticPage): void {
  app.get(path, async (_request, reply) =>
    reply.type('text/html; charset=utf-8').headers(page.headers).send(page.html),
  );
}
