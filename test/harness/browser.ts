/**
 * Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by playwright-core (which
 * downloads no browser of its own). Each launch gets a fresh profile folder, so no test sees another's
 * cookies or sessionStorage, and the browser is told not to call home (no sync, no component updates,
 * no background networking): a test run must not depend on, or talk to, anything but loopback.
 *
 * Screenshots go to test-output/screenshots/ (kept out of git).
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { type BrowserContext, chromium, type Page } from 'playwright-core';

export const CHROMIUM_PATH = process.env.GATESYNC_CHROMIUM ?? '/usr/bin/chromium';

const ROOT = new URL('../../', import.meta.url).pathname;
export const SCREENSHOT_DIR = path.join(ROOT, 'test-output', 'screenshots');

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Why a browser test cannot run here, or undefined when it can. Under CI (CI=true) a missing browser is
 * a failure, never a skip: the caller should then let the launch fail loudly.
 */
export function browserSkipReason(): string | undefined {
  if (existsSync(CHROMIUM_PATH)) return undefined;
  if (process.env.CI === 'true') return undefined;
  return `${CHROMIUM_PATH} is not installed (run scripts/setup.sh, or apt-get install chromium); skipped outside CI`;
}

export interface TestBrowser {
  context: BrowserContext;
  page: Page;
  /**
   * Closes the browser (idempotent). Call it at the end of the test, before the servers the page talks
   * to stop: node:test runs t.after hooks in the order they were added, so a venue started before the
   * browser would be stopped first, and Chromium's open (even pre-connected, unused) sockets hold a
   * Fastify close for up to a minute (Node's headers timeout).
   */
  close(): Promise<void>;
  /** Saves a full-page PNG as test-output/screenshots/<name>.png and returns its path. */
  screenshot(name: string): Promise<string>;
}

/** Launches Chromium with a fresh profile; closed and removed when the test ends. */
export async function startBrowser(t: TestContext): Promise<TestBrowser> {
  const profile = await mkdtemp(path.join(os.tmpdir(), 'gs-chromium-'));
  // playwright-core takes the profile folder as the persistent context's first argument and passes it
  // to Chromium as --user-data-dir (it refuses that flag among `args`).
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 900 },
    timeout: 60_000,
  });
  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= (async () => {
      await context.close().catch(() => {});
      await rm(profile, { recursive: true, force: true });
    })();
    return closed;
  };
  t.after(close);
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(err.message));
  t.after(() => {
    if (errors.length > 0) t.diagnostic(`page errors: ${errors.join(' | ')}`);
  });
  return {
    context,
    page,
    close,
    async screenshot(name: string): Promise<string> {
      await mkdir(SCREENSHOT_DIR, { recursive: true });
      const file = path.join(SCREENSHOT_DIR, `${name.replace(/[^A-Za-z0-9_.-]/g, '_')}.png`);
      await page.screenshot({ path: file, fullPage: true });
      return file;
    },
  };
}
