/**
 * Starts real gatesync daemons in the test process (hub and agents on listen(0), temporary SQLite files)
 * against a harness nats-server, plus small HTTP helpers. Logs are silent unless GATESYNC_TEST_LOG is set.
 */

import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { loadAgentConfig } from '../../gate-agent/config.ts';
import { type AgentHandle, startAgent } from '../../gate-agent/main.ts';
import { loadHubConfig } from '../../hub/config.ts';
import { type HubHandle, startHub } from '../../hub/main.ts';
import type { Resolver } from '../../hub/webhooks/ssrf.ts';
import { createLogger, type Logger } from '../../shared/logger.ts';
import {
  generateSigningKey,
  parseSigningKey,
  type SigningKey,
  type SigningKeyFile,
} from '../../shared/signing.ts';
import { type NatsServerHandle, startNats, tmpDir } from './index.ts';

export const ADMIN_KEY = 'test-admin-key-0123456789abcdef';
export const SCANNER_TOKEN = 'scanner-token-0123456789';

export function testLogger(name: string): Logger {
  return createLogger(name, process.env.GATESYNC_TEST_LOG ?? 'silent');
}

export interface TestKeys {
  file: string;
  json: SigningKeyFile;
  key: SigningKey;
  /** `kid:base64url`, for GATESYNC_TRUSTED_KEYS. */
  trusted: string;
}

export function makeKeys(dir: string, kid = 'k1'): TestKeys {
  const json = generateSigningKey(kid);
  const file = join(dir, `${kid}.json`);
  writeFileSync(file, JSON.stringify(json), { mode: 0o600 });
  return { file, json, key: parseSigningKey(json), trusted: `${kid}:${json.public_key}` };
}

export interface JsonResponse<T = unknown> {
  status: number;
  body: T;
  headers: Headers;
}

export async function httpJson<T = unknown>(
  url: string,
  init: {
    method?: string;
    token?: string;
    body?: unknown;
    rawBody?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<JsonResponse<T>> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  let body: string | undefined;
  if (init.rawBody !== undefined) body = init.rawBody;
  else if (init.body !== undefined) body = JSON.stringify(init.body);
  if (body !== undefined && headers['content-type'] === undefined)
    headers['content-type'] = 'application/json';
  const res = await fetch(url, {
    method: init.method ?? (body === undefined ? 'GET' : 'POST'),
    headers,
    body,
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    // Not JSON (metrics, HTML): the caller gets the text.
  }
  return { status: res.status, body: parsed as T, headers: res.headers };
}

export interface TestHub extends HubHandle {
  api<T = unknown>(
    path: string,
    init?: {
      method?: string;
      body?: unknown;
      rawBody?: string;
      token?: string;
      headers?: Record<string, string>;
    },
  ): Promise<JsonResponse<T>>;
}

export async function startTestHub(opts: {
  natsUrl: string;
  dir: string;
  keys: TestKeys;
  env?: Record<string, string>;
  /** DNS for webhook URL checks; default: the system's. */
  resolver?: Resolver;
}): Promise<TestHub> {
  const config = loadHubConfig({
    GATESYNC_NATS_URL: opts.natsUrl,
    GATESYNC_ADMIN_KEY: ADMIN_KEY,
    GATESYNC_SIGNING_KEY_FILE: opts.keys.file,
    GATESYNC_HUB_PORT: '0',
    GATESYNC_DATA_DIR: join(opts.dir, 'hub'),
    ...opts.env,
  });
  const hub = await startHub(
    config,
    testLogger('hub'),
    opts.resolver === undefined ? {} : { resolver: opts.resolver },
  );
  return Object.assign(hub, {
    api<T>(path: string, init: Parameters<TestHub['api']>[1] = {}) {
      return httpJson<T>(hub.url + path, { token: ADMIN_KEY, ...init });
    },
  });
}

export interface ScanAnswer {
  decision: 'admit' | 'reject';
  reason?: string;
  checkin_id: string;
  unsynced_ticket?: boolean;
  ticket?: { id: string; status: string };
}

export interface TestAgent extends AgentHandle {
  scan(code: string, direction?: 'in' | 'out'): Promise<ScanAnswer>;
  api<T = unknown>(
    path: string,
    init?: {
      method?: string;
      body?: unknown;
      rawBody?: string;
      token?: string;
      headers?: Record<string, string>;
    },
  ): Promise<JsonResponse<T>>;
}

export function agentEnv(opts: {
  natsUrl: string;
  venue: string;
  agentId: string;
  dbPath: string;
  trusted: string;
  gate?: string;
  port?: number;
}): Record<string, string> {
  return {
    GATESYNC_VENUE: opts.venue,
    GATESYNC_AGENT_ID: opts.agentId,
    GATESYNC_NATS_URL: opts.natsUrl,
    GATESYNC_TRUSTED_KEYS: opts.trusted,
    GATESYNC_SCANNER_TOKENS: `s1:${SCANNER_TOKEN}`,
    GATESYNC_AGENT_PORT: String(opts.port ?? 0),
    GATESYNC_DB_PATH: opts.dbPath,
    GATESYNC_VERIFY_WORKERS: '2',
    ...(opts.gate === undefined ? {} : { GATESYNC_GATE: opts.gate }),
  };
}

export async function startTestAgent(
  opts: Parameters<typeof agentEnv>[0] & { env?: Record<string, string> },
): Promise<TestAgent> {
  const config = loadAgentConfig({ ...agentEnv(opts), ...opts.env });
  const agent = await startAgent(config, testLogger(`agent-${opts.agentId}`));
  const api = <T>(path: string, init: Parameters<TestAgent['api']>[1] = {}) =>
    httpJson<T>(agent.url + path, { token: SCANNER_TOKEN, ...init });
  return Object.assign(agent, {
    api,
    async scan(code: string, direction: 'in' | 'out' = 'in'): Promise<ScanAnswer> {
      const r = await api<ScanAnswer>('/v1/scans', { body: { code, direction } });
      if (r.status !== 200) throw new Error(`scan answered ${r.status}: ${JSON.stringify(r.body)}`);
      return r.body;
    },
  });
}

/** A ticket body valid from an hour ago for a day. */
export function ticketBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Date.now();
  return {
    holder: 'Ada Lovelace',
    tier: 'GA',
    valid_from: new Date(now - 3_600_000).toISOString(),
    valid_until: new Date(now + 86_400_000).toISOString(),
    ...extra,
  };
}

export interface AgentProcess {
  pid: number;
  url: string;
  /** Resolves with the exit code or signal. */
  exited: Promise<string>;
  kill9(): Promise<string>;
  stop(): Promise<string>;
  output(): string;
}

/** Runs `gatesync agent` as a child process (so it can be killed -9) and waits until it serves scans. */
export async function spawnAgent(env: Record<string, string>): Promise<AgentProcess> {
  const { spawn } = await import('node:child_process');
  const root = new URL('../../', import.meta.url).pathname;
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'cli/gatesync.ts'), 'agent'], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', GATESYNC_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<string>((resolve) => {
    child.on('exit', (code, signal) => resolve(signal ?? String(code)));
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent did not start:\n${out}`)), 30_000);
    const onData = (chunk: Buffer) => {
      out = (out + chunk.toString()).slice(-20_000);
      const m = /"url":"(http:\/\/[^"]+)"[^\n]*gate agent serving scans/.exec(out);
      if (m?.[1] !== undefined) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    void exited.then((how) => reject(new Error(`agent exited (${how}) before serving:\n${out}`)));
  });
  return {
    pid: child.pid as number,
    url,
    exited,
    output: () => out,
    async kill9() {
      child.kill('SIGKILL');
      return exited;
    },
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

export interface HubEnv {
  dir: string;
  nats: NatsServerHandle;
  keys: TestKeys;
  hub: TestHub;
  /** Registers teardown that runs before the hub and NATS stop (last registered, first run). */
  defer(fn: () => unknown): void;
}

/**
 * The common start of an integration test: a temp folder, a nats-server of its own, a signing key and a
 * hub. Teardown runs in reverse order of set-up (agents deferred by the test stop before the hub and
 * before NATS), once, when the test ends.
 */
export async function startHubEnv(
  t: TestContext,
  opts: { prefix?: string; natsConfig?: string; hubEnv?: Record<string, string>; resolver?: Resolver } = {},
): Promise<HubEnv> {
  const dir = await tmpDir(opts.prefix ?? 'gs-test-');
  const stack: (() => unknown)[] = [() => rmSync(dir, { recursive: true, force: true })];
  t.after(async () => {
    for (const fn of stack.reverse()) await fn();
  });
  const nats = await startNats(opts.natsConfig === undefined ? {} : { config: opts.natsConfig });
  stack.push(() => nats.cleanup());
  const keys = makeKeys(dir);
  const hub = await startTestHub({
    natsUrl: nats.url,
    dir,
    keys,
    ...(opts.hubEnv ? { env: opts.hubEnv } : {}),
    ...(opts.resolver ? { resolver: opts.resolver } : {}),
  });
  stack.push(() => hub.stop());
  return { dir, nats, keys, hub, defer: (fn) => stack.push(fn) };
}
