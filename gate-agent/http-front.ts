/**
 * The agent's HTTP front: a worker thread that owns the listening socket, so that parsing requests and
 * writing answers (half of the scan path's main-thread time: a profile at concurrency 16 showed the
 * answer's socket write alone at 11 to 16% of it) run on the second core, beside the main thread's
 * decisions, SQLite and NATS work.
 *
 * The front takes the common case itself: `POST /v1/scans` with a JSON body that is exactly what the
 * route's schema accepts and a bearer token of a configured scanner. It sends those to the main thread
 * in batches (one message per turn of its event loop) and writes the answers the main thread sends back
 * (one message per commit group). Everything else (every other route, and any scan request that is not
 * plainly valid: bad JSON, a wrong type, an unknown token, a scanner id that is not the token's) is
 * forwarded whole to the main thread's Fastify app (`inject`), so errors, validation, logging and
 * metrics stay in one place and answer exactly as before. Nothing is decided or stored here.
 *
 * Off by default (GATESYNC_AGENT_HTTP_THREAD=true turns it on): on the 2-core benchmark machine, with
 * the load generator and nats-server on the same cores, it halved bench:scan's throughput at
 * concurrency 16 (2,000 against 4,000 to 5,200 scans/s, p99 37 to 57 ms against 8 to 11) although the
 * main thread was 70% idle: every hand-over between threads waits for a core, and a scan makes two more
 * of them. It is kept, tested, for hosts with cores to spare; it has not been measured on one.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { FastifyInstance } from 'fastify';
import type { ErrorAnswer } from '../shared/http.ts';
import type { Logger } from '../shared/logger.ts';
import { hashToken } from '../shared/token-hash.ts';

/** What the front needs to know, given to the worker at start. */
interface FrontData {
  gatesyncHttpFront: true;
  host: string;
  port: number;
  bodyLimit: number;
  /** [sha256 hex of token, scanner id] */
  tokens: [string, string][];
}

/** A scan the front took: [request id, code, direction or '', scanner id]. */
type ScanItem = [number, string, string, string];
/** An answer: [request id, HTTP status, JSON body]. */
type AnswerItem = [number, number, string];

type FromFront =
  | { t: 'listening'; port: number }
  | { t: 'listen_error'; message: string }
  | { t: 'scans'; items: ScanItem[] }
  | {
      t: 'request';
      id: number;
      method: string;
      url: string;
      headers: IncomingHttpHeaders;
      body: Uint8Array;
    }
  | { t: 'closed' };

type ToFront =
  | { t: 'answers'; items: AnswerItem[] }
  | {
      t: 'response';
      id: number;
      status: number;
      /** Without hop-by-hop headers; content-length only for HEAD (the app's). */
      headers: Record<string, string | string[]>;
      /** The app asked for the connection to be closed after this answer. */
      close: boolean;
      body: Uint8Array;
    }
  | { t: 'close'; graceMs: number };

/** Headers of inject's answers that belong to its connection, not to the answer. */
const HOP_HEADERS = new Set(['transfer-encoding', 'keep-alive', 'date']);

/** Milliseconds a stopping front waits for busy connections before it cuts them (as the Fastify app). */
const CLOSE_GRACE_MS = 2_000;

/** Content types Fastify's JSON parser takes: application/json, with or without parameters. */
function isJson(contentType: string | undefined): boolean {
  return (
    contentType !== undefined &&
    (contentType === 'application/json' || contentType.toLowerCase().startsWith('application/json;'))
  );
}

/**
 * The scan of a request the front can take itself, or undefined to forward it. Accepts only what the
 * route's schema (ScanBody) accepts, and a token of a configured scanner whose id, if the body names
 * one, is its own: anything else goes to the app, which answers it as it always has.
 */
export function plainScan(
  tokens: ReadonlyMap<string, string>,
  headers: IncomingHttpHeaders,
  body: Buffer,
): { code: string; direction: string; scanner: string } | undefined {
  if (!isJson(headers['content-type'])) return undefined;
  const auth = headers.authorization;
  if (auth === undefined || !auth.startsWith('Bearer ')) return undefined;
  const token = auth.slice(7).trim();
  if (token === '') return undefined;
  const scanner = tokens.get(hashToken(token));
  if (scanner === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const fields = value as Record<string, unknown>;
  for (const key of Object.keys(fields)) {
    if (key !== 'code' && key !== 'direction' && key !== 'scanner') return undefined;
  }
  const { code, direction } = fields;
  // JS length counts UTF-16 units, the schema code points: within 1..1024 here is within it there.
  if (typeof code !== 'string' || code.length < 1 || code.length > 1024) return undefined;
  if (direction !== undefined && direction !== 'in' && direction !== 'out') return undefined;
  if (fields.scanner !== undefined && fields.scanner !== scanner) return undefined;
  return { code, direction: direction ?? '', scanner };
}

/** The worker's side: listen, take plain scans, forward the rest. */
function runFront(data: FrontData, port: NonNullable<typeof parentPort>): void {
  const tokens = new Map(data.tokens);
  const pending = new Map<number, { res: ServerResponse; closeAfter: boolean }>();
  let nextId = 1;
  let closing = false;
  let batch: ScanItem[] = [];
  const send = (m: FromFront) => port.postMessage(m);

  const flushScans = () => {
    const items = batch;
    batch = [];
    send({ t: 'scans', items });
  };

  const finish = (
    id: number,
    status: number,
    headers: Record<string, string | string[]>,
    body: Buffer | string,
    close = false,
  ) => {
    const p = pending.get(id);
    if (p === undefined) return;
    pending.delete(id);
    // Otherwise Node decides: keep-alive unless the client asked to close or speaks HTTP/1.0.
    if (closing || close || p.closeAfter) headers.connection = 'close';
    // A HEAD answer has no body but carries the app's Content-Length of the GET answer.
    if (p.res.req.method !== 'HEAD' || headers['content-length'] === undefined)
      headers['content-length'] = String(typeof body === 'string' ? Buffer.byteLength(body) : body.length);
    p.res.writeHead(status, headers);
    p.res.end(body);
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let dispatched = false;
    const dispatch = (truncated: boolean) => {
      if (dispatched) return;
      dispatched = true;
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
      const id = nextId++;
      pending.set(id, { res, closeAfter: truncated });
      const scan =
        truncated || req.method !== 'POST' || req.url !== '/v1/scans'
          ? undefined
          : plainScan(tokens, req.headers, body);
      if (scan !== undefined) {
        if (batch.length === 0) setImmediate(flushScans);
        batch.push([id, scan.code, scan.direction, scan.scanner]);
        return;
      }
      const headers = { ...req.headers };
      delete headers['transfer-encoding'];
      send({ t: 'request', id, method: req.method ?? 'GET', url: req.url ?? '/', headers, body });
    };
    req.on('data', (chunk: Buffer) => {
      if (dispatched) return;
      size += chunk.length;
      if (size > data.bodyLimit) {
        // One byte over the limit is enough for the app to answer 413; the rest is not kept.
        chunks.push(chunk.subarray(0, chunk.length - (size - data.bodyLimit - 1)));
        dispatch(true);
        return;
      }
      chunks.push(chunk);
    });
    // A client gone before its answer is answered into the void (its scan, if taken, is recorded).
    req.on('end', () => dispatch(false));
  };

  const server = createServer({ keepAliveTimeout: 72_000 }, onRequest);
  server.on('error', (err: Error) => send({ t: 'listen_error', message: err.message }));
  server.listen({ host: data.host, port: data.port }, () => {
    const address = server.address();
    send({
      t: 'listening',
      port: typeof address === 'object' && address !== null ? address.port : data.port,
    });
  });

  port.on('message', (m: ToFront) => {
    switch (m.t) {
      case 'answers':
        for (const [id, status, json] of m.items)
          finish(id, status, { 'content-type': 'application/json; charset=utf-8' }, json);
        break;
      case 'response':
        finish(
          m.id,
          m.status,
          m.headers,
          Buffer.from(m.body.buffer, m.body.byteOffset, m.body.byteLength),
          m.close,
        );
        break;
      case 'close': {
        closing = true;
        const cut = setTimeout(() => server.closeAllConnections(), m.graceMs);
        server.close(() => {
          clearTimeout(cut);
          send({ t: 'closed' });
        });
        server.closeIdleConnections();
        break;
      }
    }
  });
}

if (
  !isMainThread &&
  (workerData as Partial<FrontData> | undefined)?.gatesyncHttpFront === true &&
  parentPort
) {
  runFront(workerData as FrontData, parentPort);
}

export interface HttpFrontOptions {
  /** The agent's Fastify app: it answers everything the front forwards (never listening itself). */
  app: FastifyInstance;
  /** What POST /v1/scans answers for a valid body (http-api.ts scanAnswerOf). */
  answerScan: (
    body: { code: string; direction?: 'in' | 'out'; scanner?: string },
    scanner: string,
  ) => Promise<unknown>;
  /** The envelope, log line and count of a failed scan, as the app's error handler makes them. */
  answerError: (err: Error) => ErrorAnswer;
  logger: Logger;
  host: string;
  port: number;
  bodyLimit: number;
  /** sha256 hex of each scanner token -> scanner id. */
  scannerTokens: ReadonlyMap<string, string>;
}

/** The main thread's side: starts the front, answers what it sends, stops it. */
export class HttpFront {
  private worker: Worker | undefined;
  /**
   * Answers waiting to leave, by the thread whose requests they answer: request ids are that thread's
   * own, so an answer must never reach a thread started after it (a restart).
   */
  private answers = new Map<Worker, AnswerItem[]>();
  private stopping = false;
  private closed: (() => void) | undefined;
  /** The port actually bound; a restarted front binds it again. */
  port = 0;

  constructor(private readonly opts: HttpFrontOptions) {}

  /** Starts the front; resolves with the port it listens on. */
  async start(): Promise<number> {
    this.port = await this.spawn(this.opts.port);
    return this.port;
  }

  private spawn(port: number): Promise<number> {
    const data: FrontData = {
      gatesyncHttpFront: true,
      host: this.opts.host,
      port,
      bodyLimit: this.opts.bodyLimit,
      tokens: [...this.opts.scannerTokens],
    };
    // Worker threads do not inherit tsx's module hooks on Node 20: a few lines of plain JS register them
    // and then load this file, whose bottom starts the front when it finds its workerData.
    const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))})
      .then(({ register }) => { register(); return import(${JSON.stringify(import.meta.url)}); })
      .catch((err) => { console.error(err); process.exit(1); });`;
    const worker = new Worker(boot, { eval: true, workerData: data });
    this.worker = worker;
    return new Promise<number>((resolve, reject) => {
      let listening = false;
      worker.on('message', (m: FromFront) => {
        switch (m.t) {
          case 'listening':
            listening = true;
            resolve(m.port);
            break;
          case 'listen_error':
            if (!listening) {
              reject(new Error(`the agent's HTTP front cannot listen: ${m.message}`));
              void worker.terminate();
            } else this.opts.logger.error({ err: m.message }, 'HTTP front server error');
            break;
          case 'scans':
            for (const item of m.items) this.scan(worker, item);
            break;
          case 'request':
            this.forward(worker, m.id, m.method, m.url, m.headers, m.body);
            break;
          case 'closed':
            this.closed?.();
            break;
        }
      });
      worker.on('error', (err: Error) => {
        if (!listening) reject(err);
        this.opts.logger.error({ err: err.message }, 'HTTP front thread failed');
      });
      worker.on('exit', (code) => {
        if (this.worker === worker) this.worker = undefined;
        this.answers.delete(worker);
        this.closed?.();
        if (this.stopping || !listening) return;
        // Its connections are gone with it; scanners reconnect. Serve again on the same port.
        this.opts.logger.error({ code }, 'HTTP front thread exited; starting it again');
        this.respawn(0);
      });
    });
  }

  /** Starts the front again on its port, retrying every second (with an error each time) until it listens. */
  private respawn(attempt: number): void {
    if (this.stopping) return;
    this.spawn(this.port).catch((err: unknown) => {
      this.opts.logger.error(
        { err: String(err), attempt: attempt + 1 },
        'HTTP front thread did not start again; retrying in 1 s',
      );
      setTimeout(() => this.respawn(attempt + 1), 1_000).unref();
    });
  }

  private scan(worker: Worker, [id, code, direction, scanner]: ScanItem): void {
    const body = direction === '' ? { code } : { code, direction: direction as 'in' | 'out' };
    this.opts.answerScan(body, scanner).then(
      (answer) => this.answer(worker, id, 200, JSON.stringify(answer)),
      (err: unknown) => {
        const { status, body: envelope } = this.opts.answerError(
          err instanceof Error ? err : new Error(String(err)),
        );
        this.answer(worker, id, status, JSON.stringify(envelope));
      },
    );
  }

  /** Queues an answer; a group's answers leave together, after the turn that resolved them. */
  private answer(worker: Worker, id: number, status: number, json: string): void {
    let items = this.answers.get(worker);
    if (items === undefined) {
      items = [];
      this.answers.set(worker, items);
      setImmediate(() => this.flush(worker));
    }
    items.push([id, status, json]);
  }

  private flush(worker: Worker): void {
    const items = this.answers.get(worker);
    this.answers.delete(worker);
    if (items !== undefined) this.post(worker, { t: 'answers', items });
  }

  /** To the thread that asked, if it is still the current one (a dead thread's clients are gone). */
  private post(worker: Worker, m: ToFront): void {
    if (worker === this.worker) worker.postMessage(m);
  }

  private forward(
    worker: Worker,
    id: number,
    method: string,
    url: string,
    headers: IncomingHttpHeaders,
    body: Uint8Array,
  ): void {
    this.opts.app
      .inject({
        method: method as 'GET',
        url,
        headers: headers as Record<string, string>,
        payload: Buffer.from(body.buffer, body.byteOffset, body.byteLength),
      })
      .then(
        (res) => {
          // Connection handling is the front's: inject says keep-alive on every answer, and copying it
          // would keep a client that asked to close (or speaks HTTP/1.0) open. The app's own
          // `connection: close` (after a body it could not read) is kept as a flag.
          const headers: Record<string, string | string[]> = {};
          let close = false;
          for (const [k, v] of Object.entries(res.headers)) {
            if (v === undefined || HOP_HEADERS.has(k)) continue;
            if (k === 'connection') {
              close = String(v).toLowerCase().includes('close');
              continue;
            }
            // A HEAD answer has no body but says how long the GET one would be.
            if (k === 'content-length' && method !== 'HEAD') continue;
            headers[k] = typeof v === 'number' ? String(v) : v;
          }
          this.post(worker, {
            t: 'response',
            id,
            status: res.statusCode,
            headers,
            close,
            body: res.rawPayload,
          });
        },
        (err: unknown) => {
          const { status, body: envelope } = this.opts.answerError(
            err instanceof Error ? err : new Error(String(err)),
          );
          this.post(worker, {
            t: 'response',
            id,
            status,
            headers: { 'content-type': 'application/json; charset=utf-8' },
            close: false,
            body: Buffer.from(JSON.stringify(envelope)),
          });
        },
      );
  }

  /** Stops listening; requests in flight are answered, idle connections closed, busy ones cut after 2 s. */
  async stop(): Promise<void> {
    this.stopping = true;
    const worker = this.worker;
    if (worker === undefined) return;
    await new Promise<void>((resolve) => {
      this.closed = resolve;
      this.post(worker, { t: 'close', graceMs: CLOSE_GRACE_MS });
    });
    this.closed = undefined;
    await worker.terminate();
    this.worker = undefined;
  }
}
