/**
 * A sample gatesync webhook receiver: copy it, and replace `onWebhook` with what your system does.
 *
 * It depends on nothing but Node (node:http, node:crypto), so every step of checking a Standard Webhooks
 * delivery is written out here rather than hidden in a library:
 *
 * 1. Read the raw body bytes. The signature covers the exact bytes sent; a body parsed and serialised
 *    again (key order, spacing, unicode escapes) no longer matches.
 * 2. Take `webhook-id`, `webhook-timestamp` (whole seconds) and `webhook-signature` (one or more
 *    `v1,<base64>` entries separated by spaces: while the hub rotates a secret it signs with both).
 * 3. Refuse a timestamp more than 5 minutes from our clock: a captured request cannot be replayed later.
 *    The hub stamps every attempt afresh, so a retry is never refused for being a retry.
 * 4. Compute HMAC-SHA256 over `${id}.${timestamp}.${body}` keyed with the base64-decoded bytes after
 *    `whsec_`, and compare it in constant time with each `v1,` entry; one match is enough.
 * 5. Only then parse the JSON, and drop a `webhook-id` seen before: delivery is at least once, so the same
 *    message can come again (a retry after a lost answer, a resend, a redrive). Answer it 2xx all the same,
 *    or the hub keeps retrying it.
 *
 * Answers: 204 accepted (or a repeat, acknowledged); 400 malformed; 401 signature or timestamp refused;
 * 413 body too big; 503 while no secret is set. Anything but 2xx makes the hub retry later.
 *
 * Run on its own:  WEBHOOK_SECRET=whsec_... [PORT=8080] [HOST=127.0.0.1] npx tsx examples/webhook-receiver.ts
 * (the secret is in the answer of `POST /v1/webhooks/endpoints`, or `GET /v1/webhooks/endpoints/{id}/secret`).
 * `gatesync demo` starts it in-process with `startWebhookReceiver`.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';

/** How far a `webhook-timestamp` may be from our clock, either way (seconds). */
export const TIMESTAMP_TOLERANCE_SECONDS = 5 * 60;
/** The largest body read; the hub's default cap on a message is far below this (bytes). */
const MAX_BODY_BYTES = 1024 * 1024;
/**
 * How many webhook-ids are remembered for dropping repeats. A real receiver keeps them in its database,
 * written in the same transaction as the effect of the message, for at least as long as the hub retries
 * (about 28 hours); this sample keeps the latest ones in memory.
 */
const MAX_REMEMBERED_IDS = 100_000;

const SECRET_PREFIX = 'whsec_';

/** A verified webhook, as it arrived. */
export interface Webhook {
  /** The `webhook-id` header: the same on every attempt of one message. */
  id: string;
  /** `checkin.created`, `checkin.conflict`, `agent.offline`, ... (docs/events.md). */
  type: string;
  /** When the event happened (ISO 8601), not when it was sent. */
  timestamp: string;
  data: Record<string, unknown>;
}

/** Why a delivery was refused. */
export type RefusalReason =
  | 'missing_headers'
  | 'bad_timestamp'
  | 'stale_timestamp'
  | 'bad_signature'
  | 'bad_body'
  | 'too_large'
  | 'no_secret';

export type Verification =
  | { ok: true; id: string; timestamp: number }
  | { ok: false; reason: RefusalReason; message: string };

/** The key bytes of a `whsec_` secret. Throws, without repeating the secret, if it is not one. */
export function secretKey(secret: string): Buffer {
  if (!secret.startsWith(SECRET_PREFIX)) throw new Error(`a webhook secret starts with "${SECRET_PREFIX}"`);
  const encoded = secret.slice(SECRET_PREFIX.length);
  const key = Buffer.from(encoded, 'base64');
  // Node's decoder skips characters that are not base64; re-encoding shows whether anything was skipped.
  if (key.length === 0 || key.toString('base64') !== encoded) {
    throw new Error('the part of a webhook secret after "whsec_" is not standard, padded base64');
  }
  return key;
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  // A header sent twice arrives as an array (or joined by commas for unknown names): never guess.
  return typeof v === 'string' ? v : undefined;
}

/**
 * Checks one delivery's Standard Webhooks headers against its raw body. `nowSeconds` is our clock in whole
 * seconds since the epoch (a parameter so that tests can move it).
 */
export function verifyWebhook(
  headers: IncomingHttpHeaders,
  body: Buffer,
  key: Buffer,
  nowSeconds: number = Math.floor(Date.now() / 1000),
): Verification {
  const id = header(headers, 'webhook-id');
  const ts = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  if (id === undefined || ts === undefined || signatures === undefined || id === '') {
    return {
      ok: false,
      reason: 'missing_headers',
      message: 'webhook-id, webhook-timestamp and webhook-signature are each needed once',
    };
  }
  if (!/^\d{1,12}$/.test(ts)) {
    return { ok: false, reason: 'bad_timestamp', message: 'webhook-timestamp is not whole seconds' };
  }
  const timestamp = Number(ts);
  if (Math.abs(nowSeconds - timestamp) > TIMESTAMP_TOLERANCE_SECONDS) {
    return {
      ok: false,
      reason: 'stale_timestamp',
      message: `webhook-timestamp is ${nowSeconds - timestamp} s from our clock (at most ${TIMESTAMP_TOLERANCE_SECONDS} s allowed)`,
    };
  }
  const expected = Buffer.from(
    createHmac('sha256', key).update(`${id}.${ts}.`, 'utf8').update(body).digest('base64'),
  );
  for (const entry of signatures.split(' ')) {
    const comma = entry.indexOf(',');
    // Only version 1 (HMAC-SHA256) exists; other versions are skipped, not failed, as the spec says.
    if (comma < 0 || entry.slice(0, comma) !== 'v1') continue;
    const given = Buffer.from(entry.slice(comma + 1));
    if (given.length === expected.length && timingSafeEqual(given, expected)) {
      return { ok: true, id, timestamp };
    }
  }
  return { ok: false, reason: 'bad_signature', message: 'no v1 signature matches' };
}

export interface ReceiverStats {
  /** POST requests that reached the receiver. */
  received: number;
  /** Deliveries whose signature and timestamp checked out. */
  verified: number;
  /** Verified deliveries seen for the first time (handed to `onWebhook`). */
  distinct: number;
  /** Verified deliveries whose webhook-id had been seen already (acknowledged, not handled again). */
  duplicates: number;
  /** Deliveries refused, by reason. */
  refused: Partial<Record<RefusalReason, number>>;
  /** First-time deliveries by event type. */
  byType: Record<string, number>;
}

export interface WebhookReceiverOptions {
  /** The endpoint's `whsec_` secret; may be given later with `setSecret` (until then: 503, the hub retries). */
  secret?: string;
  /** Defaults: 127.0.0.1, a free port. */
  host?: string;
  port?: number;
  /** The path that takes deliveries; others are 404. Default `/webhooks`. */
  path?: string;
  /** Each verified message, once per webhook-id. An error thrown here answers 500 (the hub retries). */
  onWebhook?: (webhook: Webhook) => void | Promise<void>;
  /** Each refused delivery. */
  onRefused?: (reason: RefusalReason, message: string) => void;
  /** Each repeat of a webhook-id already handled. */
  onDuplicate?: (id: string) => void;
  /** Our clock in milliseconds (tests move it). */
  now?: () => number;
}

export interface WebhookReceiver {
  /** Where to point the endpoint: `http://host:port/path`. */
  readonly url: string;
  readonly stats: ReceiverStats;
  setSecret(secret: string): void;
  close(): Promise<void>;
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too_large'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) over = true;
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(over ? 'too_large' : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseWebhook(body: Buffer, id: string): Webhook | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { type, timestamp, data } = parsed as Record<string, unknown>;
  if (typeof type !== 'string' || typeof timestamp !== 'string') return undefined;
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return undefined;
  return { id, type, timestamp, data: data as Record<string, unknown> };
}

/** Starts the receiver; resolves once it listens. */
export async function startWebhookReceiver(opts: WebhookReceiverOptions = {}): Promise<WebhookReceiver> {
  const path = opts.path ?? '/webhooks';
  const now = opts.now ?? Date.now;
  let key: Buffer | undefined = opts.secret === undefined ? undefined : secretKey(opts.secret);
  // Insertion-ordered, so the oldest id is the first one to forget.
  const seen = new Set<string>();
  const stats: ReceiverStats = {
    received: 0,
    verified: 0,
    distinct: 0,
    duplicates: 0,
    refused: {},
    byType: {},
  };

  const answer = (res: ServerResponse, status: number, message?: string) => {
    if (message === undefined) {
      res.writeHead(status).end();
      return;
    }
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error: message }));
  };
  const refuse = (res: ServerResponse, status: number, reason: RefusalReason, message: string) => {
    stats.refused[reason] = (stats.refused[reason] ?? 0) + 1;
    opts.onRefused?.(reason, message);
    answer(res, status, message);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://receiver');
    if (url.pathname !== path) return answer(res, 404, 'not found');
    if (req.method !== 'POST') return answer(res, 405, 'POST only');
    stats.received++;
    const body = await readBody(req, MAX_BODY_BYTES);
    if (body === 'too_large') return refuse(res, 413, 'too_large', `bodies over ${MAX_BODY_BYTES} bytes`);
    if (key === undefined) return refuse(res, 503, 'no_secret', 'no webhook secret configured yet');
    const v = verifyWebhook(req.headers, body, key, Math.floor(now() / 1000));
    if (!v.ok) return refuse(res, v.reason === 'missing_headers' ? 400 : 401, v.reason, v.message);
    stats.verified++;
    if (seen.has(v.id)) {
      stats.duplicates++;
      opts.onDuplicate?.(v.id);
      return answer(res, 204);
    }
    const webhook = parseWebhook(body, v.id);
    // Signed by the hub yet not what docs/events.md describes: refuse; retrying will not fix it, but a
    // 4xx shows up in the hub's attempt log where someone will look.
    if (webhook === undefined) return refuse(res, 400, 'bad_body', 'body is not {type, timestamp, data}');
    // Remembered before the handler runs, so a repeat arriving meanwhile is not handled twice; forgotten
    // again if the handler fails, so that the hub's retry is handled.
    seen.add(v.id);
    if (seen.size > MAX_REMEMBERED_IDS) seen.delete(seen.values().next().value as string);
    try {
      await opts.onWebhook?.(webhook);
    } catch (err: unknown) {
      seen.delete(v.id);
      throw err;
    }
    stats.distinct++;
    stats.byType[webhook.type] = (stats.byType[webhook.type] ?? 0) + 1;
    answer(res, 204);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) answer(res, 500, 'the handler failed');
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}${path}`,
    stats,
    setSecret(secret: string) {
      key = secretKey(secret);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // The hub keeps connections alive between deliveries; do not wait for it to hang up.
        server.closeAllConnections();
      }),
  };
}

/** `tsx examples/webhook-receiver.ts`: listen and print one line per message. */
async function main(): Promise<void> {
  const secret = process.env['WEBHOOK_SECRET'];
  if (secret === undefined || secret === '') {
    process.stderr.write('webhook-receiver: set WEBHOOK_SECRET to the endpoint\'s "whsec_..." secret\n');
    process.exit(2);
  }
  try {
    secretKey(secret);
  } catch (err: unknown) {
    process.stderr.write(`webhook-receiver: WEBHOOK_SECRET: ${err instanceof Error ? err.message : err}\n`);
    process.exit(2);
  }
  const port = Number(process.env['PORT'] ?? 8080);
  const rx = await startWebhookReceiver({
    secret,
    host: process.env['HOST'] ?? '127.0.0.1',
    port,
    onWebhook: (w) => {
      const d = w.data;
      const what =
        w.type === 'checkin.created' || w.type === 'checkin.rejected'
          ? `${d['venue']} gate ${d['gate']} ticket ${d['ticket_id']} ${d['decision']}${d['reason'] ? ` ${d['reason']}` : ''}`
          : w.type === 'checkin.conflict'
            ? `${d['venue']} ticket ${d['ticket_id']} admitted at two gates`
            : w.type.startsWith('agent.')
              ? `${d['venue']} gate ${d['gate']} (agent ${d['agent']})`
              : JSON.stringify(d);
      process.stdout.write(`${w.timestamp} ${w.type} ${w.id}: ${what}\n`);
    },
    onDuplicate: (id) => process.stdout.write(`repeat of ${id}: acknowledged, not handled again\n`),
    onRefused: (reason, message) => process.stdout.write(`refused (${reason}): ${message}\n`),
  });
  process.stdout.write(`webhook receiver listening at ${rx.url} (Ctrl-C stops it)\n`);
  const stop = () => {
    void rx.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
