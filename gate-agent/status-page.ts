/**
 * The gate status page for venue staff: GET /status.
 *
 * A browser cannot put a bearer token on a page load, so the page itself is static and holds no data:
 * it is served without authentication, asks once for a scanner token (kept in the tab's
 * sessionStorage), and reads everything from GET /v1/status with `Authorization: Bearer`, once a
 * second. Its CSS and JS are inline (the venue may be offline: no CDN), and a Content-Security-Policy
 * allows exactly those two blocks by hash and network access only to this agent.
 */
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { registerStaticPage, staticPage } from '../shared/static-page.ts';

const PAGE = staticPage(readFileSync(new URL('./status-page.html', import.meta.url), 'utf8'));

export function registerStatusPage(app: FastifyInstance): void {
  registerStaticPage(app, '/status', PAGE);
}
