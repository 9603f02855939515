/**
 * JetStream publishes with many acknowledgements outstanding, at the cost of a core publish.
 *
 * `js.publish()` in nats.js is a request: each call builds a request object with its own timer, an
 * inbox mapping and an error object holding a stack trace, which a profile of the agent's outbox showed
 * as a tenth of the scan path's main thread during a drain. JetStream itself needs none of that: a
 * message published with a reply subject is answered on that subject with a PubAck
 * (`{"stream","seq","duplicate"}`) or an API error (`{"error":{"code","err_code","description"}}`), and
 * with a 503 status when no stream listens on the subject. So this publisher keeps one subscription on
 * an inbox prefix, gives each publish its own reply token under it, matches the answers in a map, and
 * times out what stays unanswered with one sweep timer for all of them.
 *
 * What it does not do: retry. A publish that times out or is refused rejects its promise; the caller
 * decides (the outbox re-sends from its watermark, which the stream's dedupe makes harmless).
 */
import {
  createInbox,
  headers,
  type Msg,
  type NatsConnection,
  type Subscription,
} from '@nats-io/transport-node';

export interface PubAck {
  stream: string;
  seq: number;
  duplicate: boolean;
}

export interface PublishOptions {
  /** Nats-Msg-Id: the stream drops a second message with this id inside its duplicate window. */
  msgID?: string;
  /** Nats-Expected-Last-Subject-Sequence: 0 means "this subject holds no message yet". */
  expectLastSubjectSequence?: number;
}

/** The stream answered with an API error; `errCode` is JetStream's (10071: wrong last subject sequence). */
export class PublishRefused extends Error {
  constructor(
    readonly status: number,
    readonly errCode: number,
    description: string,
  ) {
    super(`JetStream refused the publish: ${description} (${status}/${errCode})`);
    this.name = 'PublishRefused';
  }
}

/** No answer in time, no stream on the subject, or the connection closed. */
export class PublishFailed extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PublishFailed';
  }
}

interface Pending {
  resolve: (ack: PubAck) => void;
  reject: (err: Error) => void;
  deadline: number;
}

interface AckBody {
  stream?: string;
  seq?: number;
  duplicate?: boolean;
  error?: { code?: number; err_code?: number; description?: string };
}

export class JsPublisher {
  private readonly prefix = createInbox();
  private sub: Subscription | undefined;
  private readonly pending = new Map<string, Pending>();
  private next = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  /** `timeoutMs`: how long one publish waits for its acknowledgement. */
  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 5_000,
  ) {}

  /** Publishes outstanding, waiting for their acknowledgements. */
  get inFlight(): number {
    return this.pending.size;
  }

  publish(subject: string, data: Uint8Array, opts: PublishOptions = {}): Promise<PubAck> {
    if (this.closed) return Promise.reject(new PublishFailed('the publisher is closed'));
    this.sub ??= this.nc.subscribe(`${this.prefix}.*`, { callback: (_err, msg) => this.answer(msg) });
    const token = (this.next++).toString(36);
    const h =
      opts.msgID === undefined && opts.expectLastSubjectSequence === undefined ? undefined : headers();
    if (opts.msgID !== undefined) h?.set('Nats-Msg-Id', opts.msgID);
    if (opts.expectLastSubjectSequence !== undefined)
      h?.set('Nats-Expected-Last-Subject-Sequence', String(opts.expectLastSubjectSequence));
    return new Promise<PubAck>((resolve, reject) => {
      this.pending.set(token, { resolve, reject, deadline: performance.now() + this.timeoutMs });
      try {
        this.nc.publish(subject, data, { reply: `${this.prefix}.${token}`, ...(h ? { headers: h } : {}) });
      } catch (err: unknown) {
        this.pending.delete(token);
        reject(err instanceof Error ? err : new PublishFailed(String(err)));
        return;
      }
      this.sweeper ??= setInterval(() => this.sweep(), Math.max(50, this.timeoutMs / 4));
      this.sweeper.unref();
    });
  }

  /** Rejects every outstanding publish and stops listening. */
  close(): void {
    this.closed = true;
    this.failAll('the publisher closed before the acknowledgement arrived');
    this.sub?.unsubscribe();
    this.sub = undefined;
  }

  /** Rejects every outstanding publish now (say, the link went down: their answers will not come). */
  failAll(why: string): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    this.stopSweeper();
    for (const p of all) p.reject(new PublishFailed(why));
  }

  private answer(msg: Msg): void {
    const token = msg.subject.slice(msg.subject.lastIndexOf('.') + 1);
    const p = this.pending.get(token);
    if (p === undefined) return; // timed out already: its caller has moved on
    this.pending.delete(token);
    if (this.pending.size === 0) this.stopSweeper();
    if (msg.headers?.code === 503) {
      p.reject(new PublishFailed('no JetStream stream answered for this subject (503)'));
      return;
    }
    let body: AckBody;
    try {
      body = msg.json<AckBody>();
    } catch {
      p.reject(new PublishFailed('the acknowledgement was not JSON'));
      return;
    }
    if (body.error !== undefined) {
      p.reject(
        new PublishRefused(body.error.code ?? 0, body.error.err_code ?? 0, body.error.description ?? 'error'),
      );
      return;
    }
    if (typeof body.stream !== 'string' || typeof body.seq !== 'number') {
      p.reject(new PublishFailed('the acknowledgement named no stream position'));
      return;
    }
    p.resolve({ stream: body.stream, seq: body.seq, duplicate: body.duplicate === true });
  }

  private sweep(): void {
    const now = performance.now();
    // Insertion order is deadline order (one timeout for all), so the first live one ends the sweep.
    for (const [token, p] of this.pending) {
      if (p.deadline > now) break;
      this.pending.delete(token);
      p.reject(new PublishFailed(`no acknowledgement within ${this.timeoutMs} ms`));
    }
    if (this.pending.size === 0) this.stopSweeper();
  }

  private stopSweeper(): void {
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }
}
