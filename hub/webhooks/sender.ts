/**
 * One HTTP attempt at a webhook delivery, with undici: separate connect, headers and body timeouts plus an
 * overall deadline, a bounded connection pool per origin, every address checked at connect time (SSRF and
 * DNS rebinding, see ssrf.ts), redirects never followed (undici's `request` does not follow them; a 3xx is
 * a failed attempt), and the response body read only up to a cap, then the connection dropped.
 */
import { EventEmitter } from 'node:events';
import { Agent, request } from 'undici';
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

/** One attempt's overall deadline: undici aborts the request when `signal` emits 'abort'. */
interface Deadline {
  signal: EventEmitter;
  /** performance.now() milliseconds. */
  at: number;
  expired: boolean;
}

/** Milliseconds between checks of the attempts' overall deadlines (an attempt may overrun by this much). */
const DEADLINE_SWEEP_MS = 250;

export class WebhookSender {
  private readonly agent: Agent;
  private readonly deadlineMs: number;
  /**
   * Attempts in flight, in start order (one deadline length for all, so also deadline order). One sweep
   * timer for all of them: `AbortSignal.timeout()` per attempt cost about 9 microseconds of EventTarget
   * and timer set-up each (measured), a tenth of a bare POST's whole CPU cost.
   */
  private readonly deadlines = new Set<Deadline>();
  private sweeper: NodeJS.Timeout | undefined;

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

  async send(input: SendInput): Promise<SendResult> {
    const started = performance.now();
    const elapsed = () => Math.round(performance.now() - started);
    // undici accepts an EventEmitter as the abort signal: cheaper to make than an AbortSignal.
    const deadline: Deadline = {
      signal: new EventEmitter(),
      at: started + this.deadlineMs,
      expired: false,
    };
    this.deadlines.add(deadline);
    if (this.sweeper === undefined) {
      this.sweeper = setInterval(() => this.sweep(), DEADLINE_SWEEP_MS);
      this.sweeper.unref();
    }
    const signal = deadline.signal;
    let statusCode: number | null = null;
    try {
      const res = await request(input.url, {
        method: 'POST',
        dispatcher: this.agent,
        headers: headerList(input.headers),
        body: input.body,
        signal,
      });
      statusCode = res.statusCode;
      // The status decides the outcome; a body that then stalls or breaks only shortens what is logged.
      let text = '';
      let truncated = false;
      try {
        ({ text, truncated } = await this.readCapped(res.body));
      } catch (err: unknown) {
        text = `(response body unreadable: ${errorCode(err)})`;
        truncated = true;
      }
      const retryAfter = res.headers['retry-after'];
      const outcome: AttemptOutcome = {
        kind: 'response',
        status: res.statusCode,
        retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter,
      };
      const ok = res.statusCode >= 200 && res.statusCode <= 299;
      let error: string | null = null;
      if (!ok) {
        const location = res.headers.location;
        error =
          res.statusCode >= 300 && res.statusCode <= 399
            ? `HTTP ${res.statusCode}: redirects are not followed${location === undefined ? '' : ` (to ${String(location)})`}`
            : `HTTP ${res.statusCode}`;
      }
      return {
        outcome,
        statusCode,
        durationMs: elapsed(),
        error,
        responseBody: text,
        responseTruncated: truncated,
      };
    } catch (err: unknown) {
      const code = deadline.expired ? 'ETIMEDOUT' : errorCode(err);
      const text = deadline.expired ? `no answer within ${this.deadlineMs} ms` : errorText(err);
      return {
        outcome: { kind: 'network', code },
        statusCode,
        durationMs: elapsed(),
        error: `${code}: ${text}`,
        responseBody: '',
        responseTruncated: false,
      };
    } finally {
      this.deadlines.delete(deadline);
    }
  }

  private sweep(): void {
    const now = performance.now();
    for (const d of this.deadlines) {
      if (d.at > now) break;
      this.deadlines.delete(d);
      d.expired = true;
      d.signal.emit('abort');
    }
    if (this.deadlines.size === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  /** Reads at most `responseBodyCap` bytes; a longer body is cut off and its connection dropped. */
  private async readCapped(body: AsyncIterable<Buffer> & { destroy(): unknown }): Promise<{
    text: string;
    truncated: boolean;
  }> {
    const cap = this.settings.responseBodyCap;
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body) {
      const room = cap - size;
      if (chunk.length > room) {
        if (room > 0) chunks.push(chunk.subarray(0, room));
        size = cap;
        body.destroy();
        return { text: Buffer.concat(chunks).toString('utf8'), truncated: true };
      }
      chunks.push(chunk);
      size += chunk.length;
    }
    return { text: Buffer.concat(chunks).toString('utf8'), truncated: false };
  }

  async close(): Promise<void> {
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
    await this.agent.close().catch(() => this.agent.destroy());
  }
}
