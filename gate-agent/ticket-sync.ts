/**
 * Keeps the agent's store equal to its venue's slice of GS_TICKETS.
 *
 * A durable pull consumer per agent (`gs_agent_<venue>_<agent>`, filter `gs.tix.<venue>.*`, no acks)
 * is read in a fetch loop. Messages are cut into chunks; each chunk's signatures are checked on the
 * verifier pool while the next chunk is being read, and chunks are applied strictly in order: one SQLite
 * transaction stores the chunk's valid events and moves the stream position past the whole chunk.
 *
 * Crash safety: the position in SQLite is the truth, not the consumer's, so the consumer needs no acks
 * (ack policy none: the server counts a message delivered once it is sent). Before reading, the
 * consumer's last delivered message must be the store's last applied one; if not (a crash with messages
 * in flight, a replaced database, a consumer of an older agent made with another ack policy), the
 * consumer is recreated from the store's position. While reading, every message must carry the next
 * delivery sequence; a gap (deliveries lost with a dropped link) stops the fetch and repositions the same
 * way. So the store never moves past a message it has not applied.
 *
 * Cost per ticket at bootstrap (it decides how close a fresh agent gets to the bare verification rate,
 * see docs/benchmarks.md): a chunk travels to the verify worker as a few flat buffers and comes back
 * with them, so no message object outlives its turn of the loop; only the two signature headers are read
 * from each message; and the consumer handle is kept between fetches instead of asking the server for
 * the consumer's info before each one.
 *
 * Liveness: every fetch has an expiry and idle heartbeats, so a dead link ends the fetch with an error
 * within seconds, and the loop starts a new one with backoff. No fetch can stall forever.
 */
import {
  AckPolicy,
  type Consumer,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { errorMessage } from '../shared/errors.ts';
import { decodeTicketEvent, type TicketEvent } from '../shared/events.ts';
import type { Logger } from '../shared/logger.ts';
import { RetryLoop } from '../shared/retry-loop.ts';
import { KID_HEADER, SIG_HEADER } from '../shared/signing.ts';
import { agentConsumerName, STREAMS, subjects } from '../shared/subjects.ts';
import type { AppliedEvent, TicketStore } from './ticket-store.ts';
import { OUTCOME_OK, OUTCOME_UNKNOWN_KEY, type VerifierPool, VerifyBatch } from './verifier-pool.ts';

export type RejectedEventReason = 'bad_signature' | 'unknown_key' | 'malformed' | 'wrong_subject';

export interface TicketSyncOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  store: TicketStore;
  pool: VerifierPool;
  venue: string;
  agent: string;
  logger: Logger;
  /** Messages per verify-and-apply chunk. */
  chunkSize?: number;
  onApplied?: (applied: number, stale: number) => void;
  onRejected?: (reason: RejectedEventReason, subject: string) => void;
}

const FETCH_BATCH = 2_000;
const FETCH_EXPIRES_MS = 5_000;
const IDLE_HEARTBEAT_MS = 1_000;
const MAX_CHUNKS_IN_FLIGHT = 6;

/** One chunk on its way: the signed bytes in a verify batch, and per message its stream sequence and subject. */
interface Chunk {
  batch: VerifyBatch;
  seqs: number[];
  subjects: string[];
}

export class TicketSync {
  private readonly loop: RetryLoop;
  /** Delivery sequence the next message must carry; 0 while the position is not established. */
  private expected = 0;
  private inFlight: Promise<void>[] = [];
  private chain: Promise<void> = Promise.resolve();
  /** Set when a chunk failed to apply: later chunks must not move the position past it. */
  private broken = false;
  /** Times the consumer was (re)created to match the store. */
  resets = 0;
  /** Messages the server said were still waiting after the last one delivered. */
  pending: number | undefined;
  readonly name: string;
  private readonly chunkSize: number;
  /** `gs.tix.<venue>.`: a ticket event's subject is this and the ticket id. */
  private readonly subjectPrefix: string;
  /** The durable consumer as ensureConsumer() left it; undefined until then. */
  private consumer: Consumer | undefined;
  /** Reused for every message's delivery info. */
  private readonly delivered: Delivery = { streamSequence: 0, deliverySequence: 0, pending: 0 };
  /** Reused for every message's key id and signature header. */
  private readonly signed: SignatureHeaders = { kid: undefined, sig: undefined };

  constructor(private readonly opts: TicketSyncOptions) {
    this.name = agentConsumerName(opts.venue, opts.agent);
    this.chunkSize = opts.chunkSize ?? 256;
    this.subjectPrefix = subjects.ticket(opts.venue, 'x').slice(0, -1);
    this.loop = new RetryLoop({
      logger: opts.logger,
      what: 'ticket fetch',
      round: () => this.round(),
      // After any failure the position is re-established from the store before reading again.
      onError: () => {
        this.expected = 0;
      },
    });
  }

  get lastError(): string | undefined {
    return this.loop.lastError;
  }

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    await this.chain;
  }

  /**
   * Makes sure the durable consumer continues exactly where the store stopped, and returns the delivery
   * sequence the next message must carry. The consumer is kept only when the last message it delivered
   * is the last one the store applied; otherwise (a crash with messages in flight, a replaced database,
   * deliveries lost with a dropped link) it is deleted and created again from the store's position.
   */
  async ensureConsumer(): Promise<number> {
    const { js, jsm, store } = this.opts;
    const local = store.syncPosition(STREAMS.tickets).lastSeq;
    this.consumer = undefined;
    try {
      const info = await jsm.consumers.info(STREAMS.tickets, this.name);
      if (
        info.delivered.stream_seq === local &&
        info.num_ack_pending === 0 &&
        info.config.ack_policy === AckPolicy.None
      ) {
        this.consumer = js.consumers.getConsumerFromInfo(info);
        return info.delivered.consumer_seq + 1;
      }
      this.opts.logger.info(
        { consumer: this.name, delivered: info.delivered.stream_seq, local },
        'consumer and store disagree on the position; recreating the consumer from the store position',
      );
      await jsm.consumers.delete(STREAMS.tickets, this.name);
    } catch (err: unknown) {
      if (!(err instanceof JetStreamApiError && err.code === 10014)) throw err;
    }
    const info = await jsm.consumers.add(STREAMS.tickets, {
      durable_name: this.name,
      filter_subject: subjects.venueTickets(this.opts.venue),
      ack_policy: AckPolicy.None,
      ...(local > 0
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: local + 1 }
        : { deliver_policy: DeliverPolicy.All }),
      max_waiting: 16,
    });
    this.consumer = js.consumers.getConsumerFromInfo(info);
    this.resets++;
    this.opts.logger.info({ consumer: this.name, from: local + 1 }, 'ticket consumer created');
    return 1;
  }

  /** One fetch: established position first, then messages in delivery order, cut into chunks. */
  private async round(): Promise<void> {
    if (this.expected === 0) {
      // Everything already received must be applied before the position is compared.
      await this.chain;
      this.broken = false;
      this.expected = await this.ensureConsumer();
    }
    // The handle from ensureConsumer(), not consumers.get() per fetch: that asks the server for the
    // consumer's info, and nats-server 2.9 works out num_pending for it by scanning the venue's subjects,
    // which cost more server CPU than delivering the 2,000 messages of the fetch. A consumer deleted
    // meanwhile fails the fetch (no responders), and the next round makes it again.
    const consumer = this.consumer;
    if (consumer === undefined) {
      this.expected = 0;
      throw new Error('ticket consumer not established');
    }
    const iter = await consumer.fetch({
      max_messages: FETCH_BATCH,
      expires: FETCH_EXPIRES_MS,
      idle_heartbeat: IDLE_HEARTBEAT_MS,
    });
    this.loop.track(iter);
    let chunk = this.newChunk();
    for await (const m of iter) {
      const info = delivery(m, this.delivered);
      if (info.deliverySequence !== this.expected) {
        // A gap (deliveries lost with a dropped link, or a redelivery): never apply past it.
        this.opts.logger.warn(
          { expected: this.expected, got: info.deliverySequence, seq: info.streamSequence },
          'ticket delivery out of sequence; repositioning',
        );
        iter.stop();
        this.expected = 0;
        break;
      }
      this.expected++;
      // Everything the chunk needs is copied out here, so the message itself is garbage at once.
      const signed = signatureHeaders(m, this.signed);
      chunk.batch.add(signed.kid, m.data, signed.sig);
      chunk.seqs.push(info.streamSequence);
      chunk.subjects.push(m.subject);
      this.pending = info.pending;
      if (chunk.seqs.length >= this.chunkSize || info.pending === 0) {
        await this.submit(chunk);
        chunk = this.newChunk();
      }
    }
    if (chunk.seqs.length > 0) await this.submit(chunk);
    if (this.broken) this.expected = 0;
  }

  private newChunk(): Chunk {
    return { batch: new VerifyBatch(this.chunkSize), seqs: [], subjects: [] };
  }

  /** Starts verifying a chunk now and queues its apply behind the chunks before it. */
  private async submit(chunk: Chunk): Promise<void> {
    const verified = this.opts.pool.verify(chunk.batch);
    // Awaited only once the chunks before it are applied; a failure before then (a verify worker that
    // died) must not count as an unhandled rejection meanwhile. The apply below still sees it.
    verified.catch(() => undefined);
    const applied = this.chain.then(async () => this.apply(chunk, await verified));
    this.chain = applied.catch((err: unknown) => {
      // An apply failure (disk full, I/O error) must not be skipped past: stop, and re-read from the
      // position the store holds.
      this.broken = true;
      this.loop.interrupt();
      this.opts.logger.error({ err: errorMessage(err) }, 'applying ticket events failed; will re-read');
    });
    this.inFlight.push(this.chain);
    if (this.inFlight.length >= MAX_CHUNKS_IN_FLIGHT) await this.inFlight.shift();
    if (this.inFlight.length > MAX_CHUNKS_IN_FLIGHT * 2)
      this.inFlight = this.inFlight.slice(-MAX_CHUNKS_IN_FLIGHT);
  }

  private apply(chunk: Chunk, outcomes: Uint8Array): void {
    if (this.broken) return;
    const { batch, seqs, subjects: subjectsOf } = chunk;
    // A validly signed event replayed onto another subject (another venue or ticket) is refused: the
    // subject must be exactly this venue's subject for the event's ticket. Ticket ids are valid ids (no
    // dots), so this is the same as splitting the subject into its four tokens and comparing them.
    const prefix = this.subjectPrefix;
    const events: AppliedEvent[] = [];
    for (let i = 0; i < seqs.length; i++) {
      const seq = seqs[i] as number;
      const subject = subjectsOf[i] as string;
      const outcome = outcomes[i];
      if (outcome !== OUTCOME_OK) {
        this.reject(outcome === OUTCOME_UNKNOWN_KEY ? 'unknown_key' : 'bad_signature', subject, seq);
        continue;
      }
      let event: TicketEvent;
      try {
        event = decodeTicketEvent(batch.body(i));
      } catch {
        this.reject('malformed', subject, seq);
        continue;
      }
      const ticket = event.ticket;
      if (
        ticket.venue !== this.opts.venue ||
        subject.length !== prefix.length + ticket.id.length ||
        !subject.startsWith(prefix) ||
        !subject.endsWith(ticket.id)
      ) {
        this.reject('wrong_subject', subject, seq);
        continue;
      }
      events.push({ seq, event });
    }
    const result = this.opts.store.applyTicketEvents(
      STREAMS.tickets,
      events,
      seqs[seqs.length - 1] as number,
    );
    this.opts.onApplied?.(result.applied, result.stale);
  }

  private reject(reason: RejectedEventReason, subject: string, seq: number): void {
    this.opts.logger.warn({ reason, subject, seq }, 'ticket event dropped');
    this.opts.onRejected?.(reason, subject);
  }
}

export interface SignatureHeaders {
  /** The `Gs-Kid` header, or undefined when it is missing. */
  kid: string | undefined;
  /** The `Gs-Sig` header (base64), or undefined when it is missing. */
  sig: string | undefined;
}

const NATS_HEADER_LINE = Buffer.from('NATS/1.0');
const KID_PREFIX = Buffer.from(`${KID_HEADER}:`);
const SIG_PREFIX = Buffer.from(`${SIG_HEADER}:`);
const CR = 13;
const LF = 10;
const SPACE = 32;
const TAB = 9;

/** The part of nats.js's message object that signatureHeaders() reads (not public API). */
interface ReceivedMsg {
  /** The received bytes: the header block, then the body. */
  _rdata?: unknown;
  _msg?: { /** Header block length. */ hdr?: unknown };
}

function received(m: JsMsg): ReceivedMsg | undefined {
  return (m as unknown as { msg?: ReceivedMsg }).msg;
}

/**
 * The length of the message's header block (`NATS/1.0\r\n...\r\n\r\n`) at the start of its received
 * bytes, or -1 when it has none or this nats.js keeps them some other way. Exported for its test.
 */
export function receivedHeaderLength(m: JsMsg): number {
  const inner = received(m);
  const bytes = inner?._rdata;
  const hdr = inner?._msg?.hdr;
  if (
    !(bytes instanceof Uint8Array) ||
    typeof hdr !== 'number' ||
    hdr < NATS_HEADER_LINE.length ||
    hdr > bytes.length ||
    !startsWithAt(bytes, 0, NATS_HEADER_LINE)
  ) {
    return -1;
  }
  return hdr;
}

function startsWithAt(bytes: Uint8Array, at: number, prefix: Uint8Array): boolean {
  if (at + prefix.length > bytes.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[at + i] !== prefix[i]) return false;
  return true;
}

/** A header value: the line after its key, trimmed (spaces skipped first, so trim() rarely copies). */
function headerValue(text: Buffer, from: number, to: number): string {
  let at = from;
  while (at < to && (text[at] === SPACE || text[at] === TAB)) at++;
  return text.toString('utf8', at, to).trim();
}

/**
 * A message's key id and signature headers. nats.js decodes every header of a message into a map of
 * arrays on first access (four headers on a ticket event: about 2 microseconds, a tenth of the main
 * thread's work per ticket at bootstrap); this reads the two it needs from the received bytes, with
 * the same result: the first line whose key is exactly the header's name, its value trimmed. The
 * received bytes are nats.js internals, read only when they have the expected shape; otherwise the
 * headers are decoded the public way. test/ticket-sync.test.ts checks both give the same answer.
 */
export function signatureHeaders(m: JsMsg, out: SignatureHeaders): SignatureHeaders {
  out.kid = undefined;
  out.sig = undefined;
  const hdr = receivedHeaderLength(m);
  if (hdr < 0) {
    const h = m.headers;
    // MsgHdrs.get() answers '' for a missing header.
    const kid = h?.get(KID_HEADER);
    const sig = h?.get(SIG_HEADER);
    out.kid = kid === undefined || kid === '' ? undefined : kid;
    out.sig = sig === undefined || sig === '' ? undefined : sig;
    return out;
  }
  const bytes = received(m)?._rdata as Uint8Array;
  const text = bytes instanceof Buffer ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  // Lines start after each LF; the first line is the status line.
  let at = text.indexOf(LF) + 1;
  while (at > 0 && at < hdr) {
    let end = text.indexOf(LF, at);
    if (end < 0 || end > hdr) end = hdr;
    const lineEnd = end > at && text[end - 1] === CR ? end - 1 : end;
    if (out.kid === undefined && startsWithAt(text, at, KID_PREFIX)) {
      out.kid = headerValue(text, at + KID_PREFIX.length, lineEnd);
    } else if (out.sig === undefined && startsWithAt(text, at, SIG_PREFIX)) {
      out.sig = headerValue(text, at + SIG_PREFIX.length, lineEnd);
    }
    at = end + 1;
  }
  if (out.kid === '') out.kid = undefined;
  if (out.sig === '') out.sig = undefined;
  return out;
}

/** What TicketSync needs from a message's delivery info. */
export interface Delivery {
  streamSequence: number;
  deliverySequence: number;
  /** Messages still waiting on the server after this one. */
  pending: number;
}

const ACK_PREFIX = '$JS.ACK.';
const DOT = 46;
const DIGIT_0 = 48;
const DIGIT_9 = 57;
/** Dot positions of the ack subject being parsed (up to 12 tokens, so 11 dots, plus room). */
const dots = new Int32Array(16);

/** A token of digits as a number, or -1 (empty, not only digits, or past the safe integers). */
function digits(s: string, from: number, to: number): number {
  if (to <= from || to - from > 16) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c < DIGIT_0 || c > DIGIT_9) return -1;
    n = n * 10 + (c - DIGIT_0);
  }
  return n <= Number.MAX_SAFE_INTEGER ? n : -1;
}

/** Token k of a subject whose n dots are in `dots`: it runs from dots[k - 1] + 1 to dots[k] (or the end). */
function numberToken(s: string, k: number, n: number): number {
  return digits(s, (dots[k - 1] as number) + 1, k < n ? (dots[k] as number) : s.length);
}

/**
 * Reads the stream sequence, delivery sequence and pending count from a JetStream ack subject, the
 * same fields nats.js's `m.info` gives, without splitting the subject into a dozen strings and an
 * object per message. Answers false for a subject of another shape (the caller then uses `m.info`):
 *
 *   $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<delivery seq>.<timestamp>.<pending>
 *   $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<stream seq>.<delivery seq>.<timestamp>.<pending>[.<token>]
 *
 * (the first from nats-server 2.9, the second from later servers).
 */
export function parseAckSubject(reply: string, out: Delivery): boolean {
  if (!reply.startsWith(ACK_PREFIX)) return false;
  let n = 0;
  for (let i = 0; i < reply.length; i++) {
    if (reply.charCodeAt(i) === DOT) {
      if (n === dots.length) return false;
      dots[n++] = i;
    }
  }
  const tokens = n + 1;
  // Index of the <delivered> token.
  const first = tokens === 9 ? 4 : tokens === 11 || tokens === 12 ? 6 : -1;
  if (first < 0) return false;
  const streamSequence = numberToken(reply, first + 1, n);
  const deliverySequence = numberToken(reply, first + 2, n);
  const pending = numberToken(reply, first + 4, n);
  if (streamSequence < 0 || deliverySequence < 0 || pending < 0) return false;
  out.streamSequence = streamSequence;
  out.deliverySequence = deliverySequence;
  out.pending = pending;
  return true;
}

/**
 * The message's delivery info: parsed from its ack subject, or nats.js's `m.info` when that fails. The
 * ack subject is the message's reply subject, which nats.js's JsMsg has but does not declare: read only
 * when it is a string.
 */
function delivery(m: JsMsg, out: Delivery): Delivery {
  const reply = (m as unknown as { reply?: unknown }).reply;
  if (typeof reply === 'string' && parseAckSubject(reply, out)) return out;
  const info = m.info;
  out.streamSequence = info.streamSequence;
  out.deliverySequence = info.deliverySequence;
  out.pending = info.pending;
  return out;
}
