/**
 * JetStream publishes whose PubAcks are matched here, not by a nats.js request each. Used wherever
 * gatesync publishes at volume: the gate agent's outbox, the hub's check-in judge (GS_ENTRIES,
 * GS_CONFLICTS) and its webhook pipeline (messages, deliveries, dead letters).
 *
 * Why: `js.publish()` in nats.js is `nc.request()` underneath, and every request, even one that succeeds,
 * arms a timer of its own and ends by building a `RequestError("cancelled")` with a stack trace
 * (nats-core request.js `cancel()`); a refusal is thrown as a `JetStreamApiError`, another stack trace. In
 * a profile of the hub judging a backlog of check-ins those were about a sixth of its busy time, garbage
 * collection included. JetStream needs no request: a message published with a reply subject is stored
 * (or refused) and answered on that subject with a PubAck `{"stream","seq","duplicate"}` or an API error
 * `{"error":{"code","err_code","description"}}`; when no stream listens on the subject the server answers
 * with an empty 503 status message (no responders).
 *
 * How: one wildcard subscription on a private inbox (`<inbox>.*`, nats.js re-subscribes it after a
 * reconnect); each publish takes the next token under it as its reply subject and parks its settle
 * functions in a map by that token. Answers settle the entries; one sweep timer, armed only while
 * something is outstanding, fails those past their deadline. Every entry has the same timeout and the
 * map keeps insertion order, so the sweep stops at the first entry still in time.
 *
 * What the caller gets: the promise resolves with the stream's answer, a PubAck or a refusal (a refusal
 * is a value, not an exception: the check-in judge expects "wrong last sequence" (10071) as one outcome of
 * an expected-sequence write), and rejects when there is no answer: timeout, no responders, or the
 * connection or this publisher closed. Nothing is retried here. An answer that arrives after its publish
 * timed out is dropped; the message may be stored all the same, so every publish whose retry matters is
 * written with an expected sequence or a Nats-Msg-Id that makes the retry harmless.
 *
 * The same inbox answers the judge's reads: `lastBySubject` is a JetStream direct get (a plain message to
 * `$JS.API.DIRECT.GET.<stream>`, answered with the stored message itself), matched the same way.
 */
import {
  createInbox,
  headers,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from '@nats-io/transport-node';
import { GatesyncError } from './errors.ts';

/** The stream's answer to one publish. */
export type PubAckReply =
  | { ok: true; stream: string; seq: number; duplicate: boolean }
  /** `errCode` is JetStream's own (10071: wrong last subject sequence); `status` its HTTP-like code. */
  | { ok: false; status: number; errCode: number; description: string };

export interface PubAckOptions {
  /** Nats-Msg-Id: the stream drops a second message with this id inside its duplicate window. */
  msgID?: string;
  /** Nats-Expected-Last-Subject-Sequence: 0 means "this subject holds no message yet". */
  expectLastSubjectSequence?: number;
}

/** A message read back from a stream. */
export interface StoredMessage {
  seq: number;
  data: Uint8Array;
}

/** JetStream's error code for a refused expected-sequence write. */
export const WRONG_LAST_SEQUENCE = 10071;

/** A stored publish: where the stream keeps it. */
export interface StoredAck {
  stream: string;
  seq: number;
  /** The stream already held a message with this Nats-Msg-Id (inside its duplicate window). */
  duplicate: boolean;
}

/** The stream refused a publish (`publishStored`); `errCode` is JetStream's (10071: wrong last sequence). */
export class PublishRefused extends Error {
  constructor(
    readonly status: number,
    readonly errCode: number,
    description: string,
  ) {
    super(`JetStream refused the publish: ${description} (status ${status}, err_code ${errCode})`);
    this.name = 'PublishRefused';
  }
}

/** A request waiting for its answer: a publish (PubAck or refusal) or a direct get (a message). */
type Waiting = (
  | { kind: 'ack'; resolve(value: PubAckReply): void }
  | { kind: 'get'; resolve(value: StoredMessage | null): void }
) & {
  reject(err: Error): void;
  /** Date.now() milliseconds after which the request counts as unanswered. */
  deadline: number;
  subject: string;
};

interface AnswerBody {
  stream?: unknown;
  seq?: unknown;
  duplicate?: unknown;
  error?: { code?: unknown; err_code?: unknown; description?: unknown };
}

const DEFAULT_TIMEOUT_MS = 5_000;
const NO_RESPONDERS = 503;
const NOT_FOUND = 404;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

function unanswered(message: string, subject: string): GatesyncError {
  return new GatesyncError('nats_unavailable', message, { details: { subject } });
}

/** An answer with no body is a status message: 503 when no stream listens on the subject. */
function statusError(msg: Msg, subject: string): GatesyncError {
  const status = msg.headers?.code ?? 0;
  const what =
    status === NO_RESPONDERS
      ? 'no JetStream stream answered for this subject (503 no responders)'
      : `JetStream answered with status ${status} ${msg.headers?.description ?? ''}`.trim();
  return new GatesyncError('nats_unavailable', what, { details: { subject, status } });
}

/** A publish's answer: the PubAck or refusal, or why there is none. */
function ackOf(msg: Msg, subject: string): PubAckReply | Error {
  if (msg.data.length === 0) return statusError(msg, subject);
  return parsePubAck(msg.data) ?? unanswered('the answer was not a PubAck', subject);
}

/** A direct get's answer: the message with its sequence, null for 404 (no message), or an error. */
function storedOf(msg: Msg, subject: string): StoredMessage | null | Error {
  const h = msg.headers;
  if (h !== undefined && h.code === NOT_FOUND) return null;
  const seq = Number(h?.get('Nats-Sequence'));
  if (h === undefined || (h.code !== 0 && h.code !== 200) || !Number.isSafeInteger(seq) || seq < 1) {
    return statusError(msg, subject);
  }
  return { seq, data: msg.data };
}

/** Reads a PubAck or an API error; anything else is undefined. */
export function parsePubAck(data: Uint8Array): PubAckReply | undefined {
  let body: AnswerBody;
  try {
    body = JSON.parse(decoder.decode(data)) as AnswerBody;
  } catch {
    return undefined;
  }
  if (body === null || typeof body !== 'object') return undefined;
  const e = body.error;
  if (e !== undefined && e !== null && typeof e === 'object') {
    return {
      ok: false,
      status: typeof e.code === 'number' ? e.code : 0,
      errCode: typeof e.err_code === 'number' ? e.err_code : 0,
      description: typeof e.description === 'string' ? e.description : 'error',
    };
  }
  if (typeof body.stream !== 'string' || typeof body.seq !== 'number') return undefined;
  return { ok: true, stream: body.stream, seq: body.seq, duplicate: body.duplicate === true };
}

export class PubAcks {
  private readonly inbox = createInbox();
  private readonly waiting = new Map<string, Waiting>();
  private sub: Subscription | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private counter = 0;
  private closed = false;
  private readonly expectEmpty = headers();

  /** `timeoutMs`: how long one publish waits for its answer (milliseconds). */
  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = DEFAULT_TIMEOUT_MS,
  ) {
    this.expectEmpty.set('Nats-Expected-Last-Subject-Sequence', '0');
  }

  /** Publishes waiting for their answer. */
  get outstanding(): number {
    return this.waiting.size;
  }

  /**
   * Publishes `data` with a reply token of this inbox; resolves with the stream's answer, a refusal
   * included, and rejects (`nats_unavailable`) only when there is none: timeout, no responders (503),
   * or the connection or this publisher closed.
   */
  publish(subject: string, data: string | Uint8Array, opts: PubAckOptions = {}): Promise<PubAckReply> {
    if (this.closed) return Promise.reject(unanswered('the publisher is closed', subject));
    if (this.sub === undefined) this.listen();
    const token = (this.counter++).toString(36);
    let h: MsgHdrs | undefined;
    if (opts.msgID === undefined && opts.expectLastSubjectSequence === 0) {
      // The hub's most frequent write (a ticket's first entry): one headers object for all of them, as
      // nats.js only reads (encodes) the headers it is given.
      h = this.expectEmpty;
    } else if (opts.msgID !== undefined || opts.expectLastSubjectSequence !== undefined) {
      h = headers();
      if (opts.msgID !== undefined) h.set('Nats-Msg-Id', opts.msgID);
      if (opts.expectLastSubjectSequence !== undefined) {
        h.set('Nats-Expected-Last-Subject-Sequence', String(opts.expectLastSubjectSequence));
      }
    }
    // Buffer.from is about three times as fast as the TextEncoder nats.js applies to a string (measured).
    const payload = typeof data === 'string' ? Buffer.from(data) : data;
    return new Promise<PubAckReply>((resolve, reject) => {
      this.send(token, subject, payload, h, { kind: 'ack', resolve, reject, deadline: 0, subject });
    });
  }

  /** As `publish`, for callers to whom a refusal is an error: resolves once stored, else rejects. */
  async publishStored(
    subject: string,
    data: string | Uint8Array,
    opts: PubAckOptions = {},
  ): Promise<StoredAck> {
    const r = await this.publish(subject, data, opts);
    if (!r.ok) throw new PublishRefused(r.status, r.errCode, r.description);
    return { stream: r.stream, seq: r.seq, duplicate: r.duplicate };
  }

  /**
   * The last message on `subject` in `stream`, by a direct get (`$JS.API.DIRECT.GET.<stream>`, which
   * needs `allow_direct` on the stream), answered on the same inbox: the message's own bytes and its
   * sequence in a header, with no JSON or base64 around them as the STREAM.MSG.GET API has. Resolves
   * null when the subject holds no message.
   */
  lastBySubject(stream: string, subject: string): Promise<StoredMessage | null> {
    if (this.closed) return Promise.reject(unanswered('the publisher is closed', subject));
    if (this.sub === undefined) this.listen();
    const token = (this.counter++).toString(36);
    const request = encoder.encode(JSON.stringify({ last_by_subj: subject }));
    return new Promise<StoredMessage | null>((resolve, reject) => {
      this.send(token, `$JS.API.DIRECT.GET.${stream}`, request, undefined, {
        kind: 'get',
        resolve,
        reject,
        deadline: 0,
        subject,
      });
    });
  }

  private send(token: string, subject: string, data: Uint8Array, h: MsgHdrs | undefined, w: Waiting): void {
    const reply = `${this.inbox}.${token}`;
    try {
      this.nc.publish(subject, data, h === undefined ? { reply } : { reply, headers: h });
    } catch (err: unknown) {
      w.reject(err instanceof Error ? err : unanswered(String(err), w.subject));
      return;
    }
    w.deadline = Date.now() + this.timeoutMs;
    this.waiting.set(token, w);
    if (this.sweeper === undefined) {
      this.sweeper = setInterval(() => this.sweep(), Math.max(50, Math.min(1_000, this.timeoutMs / 4)));
      this.sweeper.unref();
    }
  }

  /** Fails every outstanding publish and stops listening. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sub?.unsubscribe();
    this.sub = undefined;
    this.failAll('the publisher closed before the answer arrived');
  }

  private listen(): void {
    const sub = this.nc.subscribe(`${this.inbox}.*`, {
      callback: (err, msg) => {
        if (err === null) this.settle(msg);
      },
    });
    this.sub = sub;
    // The connection closed, or the server refused the subscription: no answer will come for what is
    // waiting. A later publish subscribes again (and fails at once if the connection is closed).
    const ended = (why: string) => {
      if (this.sub === sub) this.sub = undefined;
      this.failAll(why);
    };
    sub.closed.then(
      () => ended('the answer subscription ended before the answer arrived'),
      (err: unknown) => ended(`the answer subscription failed: ${String(err)}`),
    );
  }

  private settle(msg: Msg): void {
    const subject = msg.subject;
    const token = subject.slice(subject.lastIndexOf('.') + 1);
    const w = this.waiting.get(token);
    if (w === undefined) return; // timed out already: its caller has moved on
    this.waiting.delete(token);
    if (w.kind === 'ack') {
      const value = ackOf(msg, w.subject);
      if (value instanceof Error) w.reject(value);
      else w.resolve(value);
    } else {
      const value = storedOf(msg, w.subject);
      if (value instanceof Error) w.reject(value);
      else w.resolve(value);
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const [token, w] of this.waiting) {
      if (w.deadline > now) break;
      this.waiting.delete(token);
      w.reject(unanswered(`no answer within ${this.timeoutMs} ms`, w.subject));
    }
    if (this.waiting.size === 0) this.stopSweeper();
  }

  /** Fails everything outstanding now (say, the link went down: those answers will not come). */
  failAll(why: string): void {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    this.stopSweeper();
    for (const w of all) w.reject(unanswered(why, w.subject));
  }

  private stopSweeper(): void {
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }
}
