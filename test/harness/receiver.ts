/**
 * A webhook receiver on loopback for tests: records every request (headers, body, arrival time) and
 * answers as the test scripts it to: a status, a delay, a huge body, a redirect, or hanging up.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface Received {
  at: number;
  path: string;
  headers: Record<string, string>;
  body: string;
  /** The parsed `{ type, timestamp, data }`. */
  json: { type: string; timestamp: string; data: Record<string, unknown> };
  id: string;
}

export type Answer =
  | { status: number; headers?: Record<string, string>; body?: string; delayMs?: number }
  | { hang: true }
  | { hugeBodyBytes: number; status?: number };

export interface Receiver {
  url: string;
  received: Received[];
  /** Decides the answer to each request; default 200. */
  answer: (r: Received, index: number) => Answer;
  /** Requests with a valid Standard Webhooks signature for `secret` (any of the listed signatures). */
  verified(secret: string): Received[];
  close(): Promise<void>;
}

export async function startReceiver(answer?: Receiver['answer']): Promise<Receiver> {
  const received: Received[] = [];
  const open = new Set<ServerResponse>();
  const receiver: Receiver = {
    url: '',
    received,
    answer: answer ?? (() => ({ status: 200 })),
    verified(secret) {
      const wh = new Webhook(secret);
      return received.filter((r) => {
        try {
          wh.verify(r.body, r.headers);
          return true;
        } catch {
          return false;
        }
      });
    },
    async close() {
      for (const res of open) res.destroy();
      server.closeAllConnections();
      server.close();
      await once(server, 'close').catch(() => undefined);
    },
  };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string') headers[k] = v;
      let json: Received['json'] = { type: '', timestamp: '', data: {} };
      try {
        json = JSON.parse(body) as Received['json'];
      } catch {
        // recorded as is
      }
      const r: Received = {
        at: Date.now(),
        path: req.url ?? '/',
        headers,
        body,
        json,
        id: headers['webhook-id'] ?? '',
      };
      received.push(r);
      const a = receiver.answer(r, received.length - 1);
      if ('hang' in a) {
        open.add(res);
        return;
      }
      if ('hugeBodyBytes' in a) {
        res.writeHead(a.status ?? 200, { 'content-type': 'text/plain' });
        const chunk = Buffer.alloc(64 * 1024, 'x');
        let left = a.hugeBodyBytes;
        const write = () => {
          while (left > 0) {
            left -= chunk.length;
            if (!res.write(chunk)) {
              res.once('drain', write);
              return;
            }
          }
          res.end();
        };
        res.on('error', () => undefined);
        write();
        return;
      }
      const send = () => {
        res.writeHead(a.status, { 'content-type': 'text/plain', ...a.headers });
        res.end(a.body ?? '');
      };
      if (a.delayMs !== undefined) setTimeout(send, a.delayMs);
      else send();
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return receiver;
}

/** Short delays so retry behaviour is tested in seconds, not hours. */
export const FAST_WEBHOOKS: Record<string, string> = {
  GATESYNC_WEBHOOK_ALLOW_CIDRS: '127.0.0.0/8',
  GATESYNC_WEBHOOK_RETRY_SCHEDULE: '200ms,400ms,600ms',
  GATESYNC_WEBHOOK_THROTTLE_FLOOR: '1s',
  GATESYNC_WEBHOOK_CONNECT_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_HEADERS_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_BODY_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_BREAKER_COOLDOWN: '500ms',
};
