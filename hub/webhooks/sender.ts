/**
 * One HTTP attempt at a webhook delivery, with undici: separate connect, headers and body timeouts plus an
 * overall deadline, a bounded connection pool per origin, every address checked at connect time (SSRF and
 * DNS rebinding, see ssrf.ts), redirects never followed (undici's dispatch does not follow them; a 3xx is
 * a failed attempt), and the response body read only up to a cap, then the connection dropped.
 *
 * The request goes through undici's dispatcher API with a handler of ours (`Exchange`), not `request()`:
 * `request()` wraps every response in a Readable stream, an async resource and a promise, parses the URL
 * and every response header, and an overall deadline needed an abort signal of its own per request. The
 * handler keeps the status, the few headers a failure needs, and the body chunks up to the cap; the
 * deadline aborts it directly.
 */
import { Agent, type Dispatcher } from 'undici';
import type { WebhookSettings } from '../config.ts';
import type { AttemptOutcome } from './retry-policy.ts';
import { type Resolver, safeConnector } from './ssrf.ts';

export interface SendInput {
  url: string;
  headers: Readonly<Record<string, string>>;
  body: string;
}

export interface SendResult {
  outcome: AttemptOutcome;
  statusCode: number | null;
  durationMs: number;
  /** For a failure: what went wrong, in words. */
  error: string | null;
  responseBody: string;
  responseTruncated: boolean;
}

const USER_AGENT = 'gatesync-webhooks/0.1 (+https://github.com/gatesync)';

/** The request's headers as undici's flat list of names and values (no object spread per request). */
function headerList(extra: Readonly<Record<string, string>>): string[] {
  const list = ['content-type', 'application/json', 'user-agent', USER_AGENT];
  for (const name in extra) list.push(name, extra[name] as string);
  return list;
}

/** A network error's code: undici's own (UND_ERR_*) or the system's (ECONNREFUSED), found on the cause. */
function errorCode(err: unknown): string {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && typeof e === 'object' && e !== null; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== '') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return 'ENETWORK';
}

function errorText(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    if (!parts.includes(e.message)) parts.push(e.message);
    e = e.cause;
  }
  return parts.join(': ') || String(err);
}

/** Milliseconds between checks of the attempts' overall deadlines (an attempt may overrun by this much). */
const DEADLINE_SWEEP_MS = 250;

/** Why an exchange was aborted by us: the overall deadline, or a body over the cap. */
class Cut extends Error {}

/**
 * One request and its answer, as undici's (legacy) dispatch handler: it is called with the connection's
 * abort function, the status and raw headers, each body chunk and the end, or an error.
 */
class Exchange implements Dispatcher.DispatchHandler {
  statusCode: number | null = null;
  private rawHeaders: Buffer[] | string[] | null = null;
  private readonly chunks: Buffer[] = [];
  private size = 0;
  truncated = false;
  /** The overall deadline passed (the sweep aborted it). */
  expired = false;
  private abortFn: ((err?: Error) => void) | undefined;
  private resolve!: (x: Exchange) => void;
  private reject!: (err: unknown) => void;
  readonly done: Promise<Exchange>;

  constructor(
    readonly at: number,
    private readonly cap: number,
  ) {
    this.done = new Promise<Exchange>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  /** Ends the exchange now: the deadline passed. */
  expire(): void {
    this.expired = true;
    this.abortFn?.(new Cut('deadline'));
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abortFn = abort;
    if (this.expired) abort(new Cut('deadline'));
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[] | string[] | null): boolean {
    if (statusCode < 200) return true; // 1xx: the answer is still to come
    this.statusCode = statusCode;
    this.rawHeaders = rawHeaders;
    return true;
  }

  onData(chunk: Buffer): boolean {
    const room = this.cap - this.size;
    if (chunk.length > room) {
      if (room > 0) this.chunks.push(chunk.subarray(0, room));
      this.size = this.cap;
      this.truncated = true;
      this.abortFn?.(new Cut('cap')); // the rest is not read: the connection is dropped
      return false;
    }
    this.chunks.push(chunk);
    this.size += chunk.length;
    return true;
  }

  onComplete(): void {
    this.resolve(this);
  }

  onError(err: Error): void {
    if (this.statusCode === null) {
      this.reject(err); // no answer: a network error (or the deadline, see `expired`)
      return;
    }
    // After the status the attempt is complete: cut at the cap on purpose, or a body that broke off
    // (a timeout, a reset, the deadline), which only shortens what is logged.
    if (!(err instanceof Cut && err.message === 'cap')) this.bodyError = err;
    this.resolve(this);
  }

  /** Set when the body broke off after the status (a timeout, a reset): what is logged says so. */
  bodyError: Error | undefined;

  body(): string {
    if (this.chunks.length === 0) return '';
    return (this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks)).toString(
      'utf8',
    );
  }

  /** One response header's value (the first), by lower-case name; read only for failures. */
  header(name: string): string | undefined {
    const h = this.rawHeaders;
    if (h === null) return undefined;
    for (let i = 0; i + 1 < h.length; i += 2) {
      if (String(h[i]).toLowerCase() === name) return String(h[i + 1]);
    }
    return undefined;
  }
}

/** Where a URL's requests go, split once per URL: undici's dispatch takes origin and path apart. */
interface Target {
  origin: string;
  path: string;
}

export class WebhookSender {
  private readonly agent: Agent;
  private readonly deadlineMs: number;
  /**
   * Attempts in flight, in start order (one deadline length for all, so also deadline order). One sweep
   * timer for all of them: `AbortSignal.timeout()` per attempt cost about 9 microseconds of EventTarget
   * and timer set-up each (measured), a tenth of a bare POST's whole CPU cost.
   */
  private readonly inFlight = new Set<Exchange>();
  private sweeper: NodeJS.Timeout | undefined;
  private readonly targets = new Map<string, Target>();

  constructor(
    private readonly settings: WebhookSettings,
    resolver?: Resolver,
  ) {
    this.agent = new Agent({
      connect: safeConnector(
        { allowedCidrs: settings.allowedCidrs },
        { timeout: settings.connectTimeoutMs, ...(resolver === undefined ? {} : { resolve: resolver }) },
      ),
      connections: settings.connectionsPerOrigin,
      headersTimeout: settings.headersTimeoutMs,
      bodyTimeout: settings.bodyTimeoutMs,
      keepAliveTimeout: 30_000,
      pipelining: 1,
    });
    this.deadlineMs = settings.connectTimeoutMs + settings.headersTimeoutMs + settings.bodyTimeoutMs;
  }

  /** The longest one attempt can take. */
  get attemptDeadlineMs(): number {
    return this.deadlineMs;
  }

  private target(url: string): Target {
    let t = this.targets.get(url);
    if (t === undefined) {
      const u = new URL(url);
      t = { origin: u.origin, path: `${u.pathname}${u.search}` };
      if (this.targets.size >= 1_000) this.targets.clear();
      this.targets.set(url, t);
    }
    return t;
  }

  async send(input: SendInput): Promise<SendResult> {
    const started = performance.now();
    const x = new Exchange(started + this.deadlineMs, this.settings.responseBodyCap);
    this.inFlight.add(x);
    if (this.sweeper === undefined) {
      this.sweeper = setInterval(() => this.sweep(), DEADLINE_SWEEP_MS);
      this.sweeper.unref();
    }
    try {
      const { origin, path } = this.target(input.url);
      this.agent.dispatch(
        { origin, path, method: 'POST', headers: headerList(input.headers), body: input.body },
        x,
      );
      await x.done;
      const status = x.statusCode as number;
      let responseBody = x.body();
      let truncated = x.truncated;
      if (x.bodyError !== undefined) {
        responseBody = `(response body unreadable: ${x.expired ? 'ETIMEDOUT' : errorCode(x.bodyError)})`;
        truncated = true;
      }
      const ok = status >= 200 && status <= 299;
      let error: string | null = null;
      let retryAfter: string | undefined;
      if (!ok) {
        retryAfter = x.header('retry-after');
        const location = x.header('location');
        error =
          status >= 300 && status <= 399
            ? `HTTP ${status}: redirects are not followed${location === undefined ? '' : ` (to ${location})`}`
            : `HTTP ${status}`;
      }
      return {
        outcome: { kind: 'response', status, retryAfter },
        statusCode: status,
        durationMs: Math.round(performance.now() - started),
        error,
        responseBody,
        responseTruncated: truncated,
      };
    } catch (err: unknown) {
      const code = x.expired ? 'ETIMEDOUT' : errorCode(err);
      const text = x.expired ? `no answer within ${this.deadlineMs} ms` : errorText(err);
      return {
        outcome: { kind: 'network', code },
        statusCode: null,
        durationMs: Math.round(performance.now() - started),
        error: `${code}: ${text}`,
        responseBody: '',
        responseTruncated: false,
      };
    } finally {
      this.inFlight.delete(x);
    }
  }

  private sweep(): void {
    const now = performance.now();
    for (const x of this.inFlight) {
      if (x.at > now) break;
      this.inFlight.delete(x);
      x.expire();
    }
    if (this.inFlight.size === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  async close(): Promise<void> {
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
    await this.agent.close().catch(() => this.agent.destroy());
  }
}
