/**
 * Webhook receivers for the benchmarks, on loopback, built on plain node:http so the receiver is never
 * what limits a run.
 *
 * - `startFastReceiver`: reads each request's body, answers 200 with an empty body at once, and notes the
 *   arrival (performance.now() of this process, milliseconds) of every `webhook-id`: the first arrival per
 *   id, how many requests repeated an id already seen (duplicates), and how many did not carry a valid
 *   Standard Webhooks signature for the secret it was given. Verifying is one HMAC-SHA256 over a few
 *   hundred bytes (a few microseconds), so every request is verified, not a sample.
 * - `startHangingReceiver`: accepts connections and requests and never answers: each attempt runs into
 *   the sender's headers timeout.
 * - `closedPortUrl`: a loopback URL on which nothing listens (connections are refused).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** What the receiver hands to `onArrival` for the first arrival of each webhook-id. */
export interface Arrival {
  id: string;
  /** performance.now() in this process when the whole body had been read, milliseconds. */
  at: number;
  body: string;
}

export interface FastReceiver {
  url: string;
  /** Requests answered, duplicates included. */
  readonly requests: number;
  /** First arrival per webhook-id. */
  readonly firstArrival: Map<string, number>;
  /** Requests whose webhook-id had been received before. */
  readonly duplicates: number;
  /** Requests verified against the secret, and how many of them failed. */
  readonly verified: number;
  readonly badSignatures: number;
  /** Body bytes of the last request (for a baseline with bodies of the same size). */
  readonly lastBodyBytes: number;
  /** The `whsec_` secret signatures are checked against; unset, nothing is verified. */
  setSecret(secret: string | undefined): void;
  /** Called for the first arrival of each webhook-id. */
  onArrival: ((a: Arrival) => void) | undefined;
  /** Forgets every id and count (between runs). */
  reset(): void;
  close(): Promise<void>;
}

/** The HMAC key of a `whsec_` secret: the base64 after the prefix. */
function secretKey(secret: string): Buffer {
  if (!secret.startsWith('whsec_')) throw new Error('a webhook secret starts with whsec_');
  return Buffer.from(secret.slice('whsec_'.length), 'base64');
}

/**
 * True when one of the space-separated `v1,<base64>` signatures is the HMAC-SHA256 of
 * `${id}.${timestamp}.${body}` under `key` (Standard Webhooks).
 */
export function signatureValid(
  key: Buffer,
  id: string,
  timestamp: string,
  body: string,
  header: string,
): boolean {
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest();
  for (const part of header.split(' ')) {
    const comma = part.indexOf(',');
    if (comma < 0 || part.slice(0, comma) !== 'v1') continue;
    const got = Buffer.from(part.slice(comma + 1), 'base64');
    if (got.length === expected.length && timingSafeEqual(got, expected)) return true;
  }
  return false;
}

/** Standard Webhooks headers for one request, as a sender makes them (used by the bare baseline). */
export function signedHeaders(secret: string, id: string, body: string): Record<string, string> {
  const timestamp = String(Math.floor(Date.now() / 1000));
  const sig = createHmac('sha256', secretKey(secret)).update(`${id}.${timestamp}.${body}`).digest('base64');
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': timestamp,
    'webhook-signature': `v1,${sig}`,
  };
}

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Closes a server and every connection it holds, answered or not. */
async function shut(server: Server, sockets: Set<Socket>): Promise<void> {
  for (const s of sockets) s.destroy();
  server.closeAllConnections();
  const closed = once(server, 'close').catch(() => undefined);
  server.close();
  await closed;
}

export async function startFastReceiver(): Promise<FastReceiver> {
  let key: Buffer | undefined;
  const firstArrival = new Map<string, number>();
  const sockets = new Set<Socket>();
  const state = { requests: 0, duplicates: 0, verified: 0, badSignatures: 0, lastBodyBytes: 0 };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const at = performance.now();
      res.writeHead(200, { 'content-length': '0' });
      res.end();
      const body = Buffer.concat(chunks).toString('utf8');
      const id = req.headers['webhook-id'];
      state.requests++;
      state.lastBodyBytes = Buffer.byteLength(body);
      if (typeof id !== 'string') {
        state.badSignatures++;
        return;
      }
      if (key !== undefined) {
        state.verified++;
        const ts = req.headers['webhook-timestamp'];
        const sig = req.headers['webhook-signature'];
        if (typeof ts !== 'string' || typeof sig !== 'string' || !signatureValid(key, id, ts, body, sig)) {
          state.badSignatures++;
        }
      }
      if (firstArrival.has(id)) {
        state.duplicates++;
        return;
      }
      firstArrival.set(id, at);
      receiver.onArrival?.({ id, at, body });
    });
  };

  const server = createServer({ keepAliveTimeout: 60_000 }, handle);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const url = await listen(server);
  const receiver: FastReceiver = {
    url,
    get requests() {
      return state.requests;
    },
    firstArrival,
    get duplicates() {
      return state.duplicates;
    },
    get verified() {
      return state.verified;
    },
    get badSignatures() {
      return state.badSignatures;
    },
    get lastBodyBytes() {
      return state.lastBodyBytes;
    },
    setSecret(secret) {
      key = secret === undefined ? undefined : secretKey(secret);
    },
    onArrival: undefined,
    reset() {
      firstArrival.clear();
      state.requests = 0;
      state.duplicates = 0;
      state.verified = 0;
      state.badSignatures = 0;
    },
    close: () => shut(server, sockets),
  };
  return receiver;
}

export interface HangingReceiver {
  url: string;
  /** Requests taken and never answered. */
  readonly requests: number;
  /** Connections opened to it so far. */
  readonly connections: number;
  close(): Promise<void>;
}

export async function startHangingReceiver(): Promise<HangingReceiver> {
  const sockets = new Set<Socket>();
  let requests = 0;
  let connections = 0;
  // The request is read and then left without an answer; the socket stays open until the sender gives up.
  const server = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req) => {
    requests++;
    req.resume();
  });
  server.on('connection', (s: Socket) => {
    connections++;
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const url = await listen(server);
  return {
    url,
    get requests() {
      return requests;
    },
    get connections() {
      return connections;
    },
    close: () => shut(server, sockets),
  };
}

/** A loopback URL where nothing listens: a port taken from the OS and released again. */
export async function closedPortUrl(): Promise<string> {
  const server = createServer();
  const url = await listen(server);
  server.close();
  await once(server, 'close');
  return url;
}
