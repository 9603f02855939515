/**
 * Delivers one endpoint's queue. Each endpoint has a durable pull consumer of its own on
 * `gs.wh.<endpoint>` (GS_WEBHOOKS is a work queue), its own concurrency limit, token bucket and circuit
 * breaker, so a slow or dead endpoint stalls nothing but itself (DESIGN.md, "Webhook retries").
 *
 * A failed attempt is not nak'd to wait: the worker queues the next attempt as a new message that carries
 * its due time, then acks the failed one. A message fetched before it is due is nak'd with the delay that
 * is left, which costs nothing but a slot in this endpoint's own pending set. The attempt log is written
 * after the message is acked or re-queued, so writing it can never cause a second delivery.
 *
 * Order: messages with the same order key (a ticket) are attempted one at a time, in the order they were
 * fetched, so the first attempts of one ticket's messages are made in order. A retry goes to the back of
 * the queue; a later message can succeed before an earlier one that is waiting to be retried.
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
import { errorMessage } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import { childCache } from '../../shared/metric-children.ts';
import type { NatsConnection } from '../../shared/nats.ts';
import type { PubAcks } from '../../shared/pub-acks.ts';
import { RetryLoop } from '../../shared/retry-loop.ts';
import { Pause } from '../../shared/sleep.ts';
import { STREAMS, subjects } from '../../shared/subjects.ts';
import type { WebhookSettings } from '../config.ts';
import type { HubMetrics } from '../metrics.ts';
import type { Dispatcher } from './dispatcher.ts';
import { messageBody } from './dispatcher.ts';
import type { EndpointStore } from './endpoints.ts';
import { KEEP_ALIVE_SWEEP_MS, keepHeldAlive } from './keep-alive.ts';
import type { AttemptRecord, DeadLetter, Delivery, EndpointRecord } from './model.ts';
import { ackInNextTurn, inNextTurn } from './next-turn.ts';
import { type BreakerState, CircuitBreaker, TokenBucket } from './rate-limiter.ts';
import { planNext } from './retry-policy.ts';
import { activeSecrets, webhookHeaders } from './secrets.ts';
import type { WebhookSender } from './sender.ts';

const NANOS_PER_MS = 1_000_000;
/** Parked retries plus attempts in flight, per endpoint. Beyond it, new messages wait in the stream. */
const MAX_ACK_PENDING = 10_000;
/** Recent attempts kept in memory per endpoint for the dashboard's success rate and latency. */
const STATS_WINDOW = 500;
/**
 * How long direct first attempts may wait for a free slot when the endpoint has freed none for as long
 * (it is stuck, not merely busy). Then, or after CROWDED_WAIT_MS when a source is out of room while
 * other endpoints are enabled (this one's waiting holds their events back), it and every other one
 * waiting are handed back to be queued in GS_WEBHOOKS, and the endpoint gets no direct attempt for
 * DIRECT_WAIT_MS. A fast endpoint alone under a burst keeps every event
 * on the direct path (the source's window bounds how many wait), however busy the hub is.
 */
const DIRECT_WAIT_MS = 1_000;
/**
 * Longest a direct first attempt ever waits for a slot, holding its event unacked: a slow endpoint alone
 * is never stuck nor crowded, and the source's events behind its window (not kept alive) must not outlive
 * their ack wait (30 s).
 */
const MAX_DIRECT_WAIT_MS = 5_000;
/** How long direct attempts may wait for a slot while a source is out of room (see expireDirect). */
const CROWDED_WAIT_MS = 50;
/** A full endpoint that has freed no slot for this long is stuck: its events go to its queue. */
const STUCK_MS = 2_000;
/** Milliseconds between checks of waiting direct attempts against DIRECT_WAIT_MS. */
const DIRECT_SWEEP_MS = 50;
/**
 * After this long without taking a message from its queue while it had free slots, the worker forgets
 * the queued deliveries it has not seen (another hub process took them).
 */
const UNSEEN_FORGET_MS = 10_000;

export function endpointConsumerName(endpointId: string): string {
  return `gs_wh_${endpointId}`;
}

export interface EndpointHealth {
  in_flight: number;
  breaker: BreakerState;
  attempts: number;
  succeeded: number;
  failed: number;
  success_rate: number | null;
  latency_p50_ms: number | null;
  latency_p95_ms: number | null;
  /** The last failure seen by this hub process, and when: an older one than last_attempt_at is history. */
  last_error: string | null;
  last_error_at: string | null;
  last_attempt_at: string | null;
}

export interface WorkerDeps {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  acks: PubAcks;
  store: EndpointStore;
  dispatcher: Dispatcher;
  sender: WebhookSender;
  settings: WebhookSettings;
  logger: Logger;
  metrics: HubMetrics;
  /** The hub disabled an endpoint (410 or failing too long): tell the other endpoints. */
  onDisabled(e: EndpointRecord): void;
  /** A delivery used up its retries. */
  onExhausted(dl: DeadLetter): void;
}

function quantile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? null;
}

/**
 * What an attempt settles when it ends: the GS_WEBHOOKS message it came from, or, for a direct first
 * attempt, the dispatcher's hand-back (ack: done; nak: not done, queue it; term: nothing to send).
 */
interface Hold {
  ack(): void;
  nak(millis?: number): void;
  term(): void;
}

/**
 * A direct first attempt's hand-back. Acked (done) or terminated (nothing to send), `settled` resolves;
 * nak'd (handed back), the delivery is queued instead and `settled` follows that publish.
 */
class DirectHold implements Hold {
  readonly settled: Promise<void>;
  private resolve!: (done: undefined | Promise<void>) => void;
  constructor(
    readonly d: Delivery,
    private readonly queue: { queueDelivery(d: Delivery): Promise<void> },
  ) {
    this.settled = new Promise<void>((resolve) => {
      this.resolve = resolve;
    });
  }
  private done = false;
  ack(): void {
    this.settle(undefined);
  }
  term(): void {
    this.settle(undefined);
  }
  nak(): void {
    if (!this.done) this.settle(this.queue.queueDelivery(this.d));
  }
  private settle(how: undefined | Promise<void>): void {
    if (this.done) return; // the first word counts, as for a JetStream message
    this.done = true;
    this.resolve(how);
  }
}

/** Waiting for a free slot: the worker's own queue (never expires) or a direct first attempt (expires). */
interface SlotWaiter {
  /** The worker's loop: true, the slot is free (take it); false, give up. */
  grant: ((ok: boolean) => void) | undefined;
  /** A direct first attempt: takes the slot at once, or is handed back. */
  hold: DirectHold | undefined;
  since: number;
}

export class EndpointWorker {
  private readonly loop: RetryLoop;
  private readonly pause = new Pause();
  private readonly breaker: CircuitBreaker;
  private bucket: TokenBucket | undefined;
  private bucketRate: number | null = null;
  private inFlight = 0;
  private readonly slotWaiters: SlotWaiter[] = [];
  private directWaiting = 0;
  private directSweep: NodeJS.Timeout | undefined;
  private readonly orderTails = new Map<string, Promise<void>>();
  /**
   * Per order key (ticket), deliveries this process queued to the endpoint that the worker has not yet
   * taken from its queue: a direct attempt of that ticket would overtake them.
   */
  private readonly unseen = new Map<string, number>();
  /** Messages queued before the worker started and not yet taken: no direct attempt may overtake them. */
  private backlog = 0;
  private lastTaken = Date.now();
  /** When a slot was last freed: a full endpoint that frees none for DIRECT_WAIT_MS is stuck. */
  private lastRelease = Date.now();
  /** Until then direct attempts are refused: one waited in vain for a slot. */
  private slowUntil = 0;
  /** The last attempt failed: no direct attempt until one succeeds. */
  private failing = false;
  private started = false;
  /** The last STATS_WINDOW attempts (a ring: `recentAt` is where the next one goes). */
  private readonly recent: { ok: boolean; ms: number }[] = [];
  private recentAt = 0;
  private lastError: string | null = null;
  /** Milliseconds since the epoch (formatted when health() is asked, not on every attempt). */
  private lastErrorAt: number | null = null;
  private lastAttemptAt: number | null = null;
  /** The attempts counter and latency histogram per pair of labels, each found once. */
  private readonly counted = childCache((outcome: 'succeeded' | 'failed', next: AttemptRecord['next']) =>
    this.deps.metrics.webhookDeliveries.labels({ outcome, next }),
  );
  private readonly timed = childCache((outcome: 'succeeded' | 'failed') =>
    this.deps.metrics.webhookLatency.labels({ outcome }),
  );
  private running = 0;
  private onIdle: (() => void) | undefined;
  private consumer: Consumer | undefined;
  /** Messages taken and not yet settled, with when they last told the server they are alive. */
  private readonly taken = new Map<JsMsg, number>();
  private keepAlive: NodeJS.Timeout | undefined;

  constructor(
    readonly endpointId: string,
    private readonly deps: WorkerDeps,
  ) {
    this.breaker = new CircuitBreaker({
      consecutiveFailures: deps.settings.breakerFailures,
      coolDownMs: deps.settings.breakerCoolDownMs,
      maxCoolDownMs: Math.max(deps.settings.breakerCoolDownMs, 10 * 60_000),
    });
    this.loop = new RetryLoop({
      logger: deps.logger,
      what: `webhook worker ${endpointId}`,
      round: () => this.round(),
    });
  }

  private get endpoint(): EndpointRecord | undefined {
    return this.deps.store.get(this.endpointId);
  }

  private get concurrency(): number {
    return Math.max(1, this.endpoint?.max_concurrency ?? 1);
  }

  async start(): Promise<void> {
    // What is queued already (after a restart, say) goes first: no direct attempt until it is taken.
    this.backlog = await ensureEndpointConsumer(
      this.deps.jsm,
      this.endpointId,
      this.deps.sender.attemptDeadlineMs,
    );
    // One timer for the worker, not one per message.
    this.keepAlive = setInterval(() => this.keepTakenAlive(), KEEP_ALIVE_SWEEP_MS);
    this.keepAlive.unref();
    this.started = true;
    this.loop.start();
  }

  async stop(): Promise<void> {
    this.pause.interrupt();
    for (const w of this.slotWaiters.splice(0)) {
      if (w.hold !== undefined) w.hold.nak();
      else w.grant?.(false);
    }
    this.directWaiting = 0;
    await this.loop.stop();
    if (this.running > 0) await new Promise<void>((resolve) => (this.onIdle = resolve));
    if (this.directSweep !== undefined) clearInterval(this.directSweep);
    this.directSweep = undefined;
    if (this.keepAlive !== undefined) clearInterval(this.keepAlive);
    this.keepAlive = undefined;
    // The last acks and log lines deferred to the next turn go out before the worker counts as stopped.
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  private keepTakenAlive(): void {
    // An attempt in flight (behind its ticket's earlier message, waiting for a token or the receiver).
    const now = Date.now();
    keepHeldAlive(this.taken, now);
    // Queued deliveries that another hub process took are never seen here: forget them once the
    // queue has been quiet for a while with slots free.
    if (
      (this.unseen.size > 0 || this.backlog > 0) &&
      this.inFlight < this.concurrency &&
      now - this.lastTaken > UNSEEN_FORGET_MS
    ) {
      this.unseen.clear();
      this.backlog = 0;
    }
  }

  /**
   * The dispatcher queued a delivery to this endpoint: until the worker takes it, no direct attempt of
   * the same ticket is made.
   */
  noteQueued(d: Delivery): void {
    const key = d.message.order_key;
    if (key !== null) this.unseen.set(key, (this.unseen.get(key) ?? 0) + 1);
  }

  private taken1(d: Delivery): void {
    const key = d.message.order_key;
    if (key === null) return;
    const n = this.unseen.get(key);
    if (n === undefined) return;
    if (n <= 1) this.unseen.delete(key);
    else this.unseen.set(key, n - 1);
  }

  /**
   * A direct first attempt of `d` (attempt 1 of an event), made by this worker without going through
   * GS_WEBHOOKS. Refused (false: queue it) unless the endpoint is running and enabled, has no rate limit,
   * a closed breaker, nothing queued that this worker has not taken yet, and no attempt of the same
   * ticket in progress. Otherwise resolves once the attempt succeeded or what follows it is stored (its
   * retry or dead letter, or the delivery itself queued when it was handed back: no slot in time, the
   * endpoint changed meanwhile), and rejects when that could not be stored.
   */
  offer(d: Delivery): Promise<void> | false {
    if (!this.directOpen(d)) return false;
    const hold = new DirectHold(d, this.deps.dispatcher);
    if (this.inFlight < this.concurrency && this.slotWaiters.length === 0) {
      this.attempt(hold, d, undefined);
    } else {
      this.directWaiting++;
      this.slotWaiters.push({ grant: undefined, hold, since: Date.now() });
      if (this.directSweep === undefined) {
        this.directSweep = setInterval(() => this.expireDirect(), DIRECT_SWEEP_MS);
        this.directSweep.unref();
      }
    }
    return hold.settled;
  }

  private directOpen(d: Delivery): boolean {
    if (!this.started || this.loop.stopping || this.backlog > 0 || this.failing) return false;
    const e = this.endpoint;
    if (e === undefined || e.disabled || e.rate_limit !== null) return false;
    const now = Date.now();
    if (now < this.slowUntil) return false;
    // Every slot taken and none freed for a while: a stuck endpoint, whose events go to its queue.
    if (this.inFlight >= this.concurrency && now - this.lastRelease > STUCK_MS) return false;
    if (this.breaker.state(now) !== 'closed') return false;
    const key = d.message.order_key;
    return key === null || (!this.orderTails.has(key) && !this.unseen.has(key));
  }

  /** A direct attempt waited too long for a slot: it and every other one waiting are handed back. */
  private expireDirect(): void {
    const now = Date.now();
    const oldest = this.slotWaiters.find((w) => w.hold !== undefined);
    const waited = oldest === undefined ? 0 : now - oldest.since;
    if (
      waited > MAX_DIRECT_WAIT_MS ||
      (waited > DIRECT_WAIT_MS && now - this.lastRelease > DIRECT_WAIT_MS) ||
      // A source is out of room while other endpoints wait: this endpoint's waiting holds their events
      // back, so it is handed back at the next sweep, not after DIRECT_WAIT_MS (bench:isolation showed
      // the healthy endpoint stalled about 1 s behind a hanging one's waiting events).
      (waited > CROWDED_WAIT_MS && this.deps.dispatcher.crowded())
    ) {
      this.slowUntil = now + DIRECT_WAIT_MS;
      this.handBack();
    }
    if (this.directWaiting === 0 && this.directSweep !== undefined) {
      clearInterval(this.directSweep);
      this.directSweep = undefined;
    }
  }

  /** Every direct attempt waiting for a slot is handed back, to be queued. */
  private handBack(): void {
    if (this.directWaiting === 0) return;
    const direct = this.slotWaiters.filter((w) => w.hold !== undefined);
    const rest = this.slotWaiters.filter((w) => w.hold === undefined);
    this.slotWaiters.length = 0;
    this.slotWaiters.push(...rest);
    this.directWaiting = 0;
    for (const w of direct) w.hold?.nak();
  }

  health(): EndpointHealth {
    const ok = this.recent.filter((r) => r.ok).length;
    const sorted = this.recent.map((r) => r.ms).sort((a, b) => a - b);
    return {
      in_flight: this.inFlight,
      breaker: this.breaker.state(Date.now()),
      attempts: this.recent.length,
      succeeded: ok,
      failed: this.recent.length - ok,
      success_rate: this.recent.length === 0 ? null : ok / this.recent.length,
      latency_p50_ms: quantile(sorted, 0.5),
      latency_p95_ms: quantile(sorted, 0.95),
      last_error: this.lastError,
      last_error_at: this.lastErrorAt === null ? null : new Date(this.lastErrorAt).toISOString(),
      last_attempt_at: this.lastAttemptAt === null ? null : new Date(this.lastAttemptAt).toISOString(),
    };
  }

  private async waitForSlot(): Promise<void> {
    while (this.inFlight >= this.concurrency && !this.loop.stopping) {
      await new Promise<boolean>((resolve) =>
        this.slotWaiters.push({ grant: resolve, hold: undefined, since: 0 }),
      );
    }
  }

  private releaseSlot(): void {
    this.inFlight--;
    this.lastRelease = Date.now();
    this.deps.metrics.webhookInFlight.dec();
    this.wakeNext();
  }

  private wakeNext(): void {
    const next = this.slotWaiters.shift();
    if (next === undefined) return;
    if (next.hold === undefined) {
      next.grant?.(true);
      return;
    }
    this.directWaiting--;
    const { hold } = next;
    if (this.directOpen(hold.d)) this.attempt(hold, hold.d, undefined);
    else {
      hold.nak(); // no longer wanted (the endpoint changed meanwhile): queued, and the slot passed on
      this.wakeNext();
    }
  }

  /**
   * One consume() of the endpoint's queue, kept topped up by the client (one pull per `concurrency`
   * messages, not one per free slot). A message is taken only when a slot is free and the breaker lets
   * sends go; while it waits the buffer stays full, so nothing more is pulled.
   */
  private async round(): Promise<void> {
    if (this.loop.stopping) return;
    this.consumer ??= await this.deps.js.consumers.get(
      STREAMS.webhooks,
      endpointConsumerName(this.endpointId),
    );
    // At most `concurrency` messages buffered (as many as the slots), refilled when a quarter is left:
    // one pull request per 3/4 of `concurrency` messages, not per 1/4 as with the client's default
    // threshold. The buffer is not made bigger: a buffered message is not kept alive, and while the
    // breaker holds the head of the queue longer than ack_wait the server hands the buffered ones out
    // again.
    const c = this.concurrency;
    const iter = await this.consumer.consume({
      max_messages: Math.max(2, c),
      threshold_messages: Math.max(1, Math.floor(c / 4)),
      expires: 5_000,
      idle_heartbeat: 1_000,
    });
    this.loop.track(iter);
    try {
      for await (const m of iter) {
        if (this.backlog > 0) this.backlog = m.info.pending === 0 ? 0 : this.backlog - 1;
        this.lastTaken = Date.now();
        await this.waitForSlot();
        await this.waitForBreaker(m);
        if (this.loop.stopping) {
          m.nak();
          break;
        }
        this.accept(m);
      }
    } catch (err: unknown) {
      this.consumer = undefined; // looked up again next round
      throw err;
    }
  }

  /** While the breaker is open nothing is sent: hold the message (alive) until a probe may go. */
  private async waitForBreaker(m: JsMsg): Promise<void> {
    for (;;) {
      const snap = this.breaker.snapshot(Date.now());
      if (snap.state !== 'open' || snap.openUntil === undefined || this.loop.stopping) return;
      m.working();
      await this.pause.sleep(Math.max(10, Math.min(5_000, snap.openUntil - Date.now())));
    }
  }

  /** Takes one fetched message: parks it if not due, else starts its attempt in a slot. */
  private accept(m: JsMsg): void {
    let d: Delivery;
    try {
      d = JSON.parse(m.string()) as Delivery;
      if (d.v !== 1 || typeof d.message?.id !== 'string') throw new Error('unknown delivery format');
    } catch (err: unknown) {
      this.deps.logger.error({ err: errorMessage(err), seq: m.seq }, 'malformed webhook delivery dropped');
      m.term();
      return;
    }
    this.taken1(d);
    const wait = d.due_at - Date.now();
    if (wait > 0) {
      m.nak(wait);
      return;
    }
    // Waiting behind an earlier message of the same ticket, or for a token, must not let the server
    // think this hub died and hand the message to another: keepTakenAlive() covers it.
    this.taken.set(m, Date.now());
    this.attempt(m, d, m);
  }

  /**
   * Runs one attempt in a slot: after the same ticket's attempt in progress, if any. The attempt log is
   * written after the slot is free: it is not part of the delivery.
   */
  private attempt(h: Hold, d: Delivery, m: JsMsg | undefined): void {
    // An idle endpoint's slots start being used now: "no slot freed for a while" counts from here.
    if (this.inFlight === 0) this.lastRelease = Date.now();
    this.inFlight++;
    this.running++;
    this.deps.metrics.webhookInFlight.inc();
    const key = d.message.order_key;
    const previous = key === null ? undefined : this.orderTails.get(key);
    let task: Promise<void> | undefined;
    task = (async () => {
      let attempt: AttemptRecord | undefined;
      try {
        if (previous !== undefined) await previous;
        attempt = await this.deliver(h, d);
      } catch (err: unknown) {
        this.deps.logger.warn({ err: errorMessage(err), message: d.message.id }, 'webhook delivery failed');
        h.nak(1_000);
      } finally {
        if (m !== undefined) this.taken.delete(m);
        if (key !== null && this.orderTails.get(key) === task) this.orderTails.delete(key);
        this.releaseSlot();
      }
      if (attempt !== undefined) this.log(attempt);
      if (--this.running === 0) this.onIdle?.();
    })();
    if (key !== null) this.orderTails.set(key, task);
  }

  /**
   * Writes one attempt to GS_ATTEMPTS as a plain NATS publish: the stream stores it, but nothing waits for
   * a JetStream ack. The log is best effort by design (a lost line never causes a second delivery), and
   * a request per attempt was a quarter of the hub's JetStream round trips per delivery.
   */
  private log(attempt: AttemptRecord): void {
    inNextTurn(() => this.publishLog(attempt));
  }

  private publishLog(attempt: AttemptRecord): void {
    try {
      this.deps.nc.publish(
        subjects.attempt(this.endpointId, attempt.message_id),
        Buffer.from(JSON.stringify(attempt)),
      );
    } catch (err: unknown) {
      this.deps.logger.warn(
        { err: errorMessage(err), message: attempt.message_id },
        'attempt log not written',
      );
    }
  }

  /** Makes the attempt, acks or re-queues; returns the attempt to log, or undefined when none was made. */
  private async deliver(m: Hold, d: Delivery): Promise<AttemptRecord | undefined> {
    const endpoint = this.endpoint;
    if (endpoint === undefined) {
      m.term(); // deleted: its queue is purged
      return undefined;
    }
    if (endpoint.disabled) {
      m.nak(5_000); // waits in the queue until the endpoint is enabled
      return undefined;
    }
    // The breaker and the rate limit delay an attempt without counting it.
    const wait = this.breaker.acquire(Date.now());
    if (wait > 0) {
      m.nak(wait);
      return undefined;
    }
    if (endpoint.rate_limit !== null || this.bucket !== undefined) await this.takeToken(endpoint);

    const now = Date.now();
    const timestamp = Math.floor(now / 1000);
    const body = messageBody(d.message);
    const headers = webhookHeaders({
      id: d.message.id,
      timestamp,
      body,
      secrets: activeSecrets(endpoint.secrets, now),
    });
    const result = await this.deps.sender.send({ url: endpoint.url, headers, body });
    const done = Date.now();
    const plan = planNext({
      attempt: d.attempt,
      schedule: this.deps.settings.retryScheduleMs,
      outcome: result.outcome,
      random: Math.random,
      now: done,
      throttleFloorMs: this.deps.settings.throttleFloorMs,
    });
    const succeeded = plan.action === 'delivered';
    this.record(succeeded, result.durationMs, result.error, now);

    let next: AttemptRecord['next'] = 'delivered';
    let nextAt: number | null = null;
    switch (plan.action) {
      case 'delivered':
        this.breaker.recordSuccess(done);
        ackInNextTurn(m);
        this.deps.metrics.webhookEndToEnd.observe((done - Date.parse(d.message.timestamp)) / 1000);
        if (endpoint.failing_since !== null) await this.bestEffort(() => this.markHealthy());
        break;
      case 'retry':
        this.breaker.recordFailure(done);
        next = 'retry';
        nextAt = plan.dueAt;
        await this.deps.dispatcher.queue(d.message, this.endpointId, {
          attempt: d.attempt + 1,
          trigger: 'retry',
          dueAt: plan.dueAt,
          chain: d.chain,
        });
        m.ack();
        if (await this.bestEffort(() => this.markFailing(done))) next = 'endpoint_disabled';
        break;
      case 'dead_letter':
        this.breaker.recordFailure(done);
        next = 'dead_letter';
        await this.deadLetter(d, plan.reason);
        m.ack();
        await this.bestEffort(() => this.markFailing(done));
        break;
      case 'disable_endpoint':
        next = 'endpoint_disabled';
        await this.disable('gone');
        await this.deadLetter(d, `the endpoint was disabled: ${plan.reason}`);
        m.ack();
        break;
    }
    const outcome = succeeded ? 'succeeded' : 'failed';
    this.counted(outcome, next).inc();
    this.timed(outcome).observe(result.durationMs / 1000);
    const attempt: AttemptRecord = {
      id: newId('att_'),
      message_id: d.message.id,
      endpoint_id: this.endpointId,
      event_type: d.message.type,
      attempt: d.attempt,
      trigger: d.trigger,
      at: new Date(now).toISOString(),
      outcome: succeeded ? 'succeeded' : 'failed',
      status_code: result.statusCode,
      duration_ms: result.durationMs,
      error: result.error,
      response_body: result.responseBody,
      response_truncated: result.responseTruncated,
      next,
      next_attempt_at: nextAt === null ? null : new Date(nextAt).toISOString(),
    };
    return attempt;
  }

  private async takeToken(endpoint: EndpointRecord): Promise<void> {
    if (endpoint.rate_limit === null) {
      this.bucket = undefined;
      this.bucketRate = null;
      return;
    }
    if (this.bucket === undefined || this.bucketRate !== endpoint.rate_limit) {
      // Burst of one second's worth (at least 1): a receiver asking for 10/s never gets 50 at once.
      this.bucket = new TokenBucket({
        ratePerSecond: endpoint.rate_limit,
        burst: Math.max(1, Math.floor(endpoint.rate_limit)),
      });
      this.bucketRate = endpoint.rate_limit;
    }
    for (;;) {
      if (this.loop.stopping) throw new Error('the worker is stopping');
      const wait = this.bucket.take(Date.now());
      if (wait === 0) return;
      await new Promise((r) => setTimeout(r, Math.min(wait, 5_000)));
    }
  }

  private record(ok: boolean, ms: number, error: string | null, at: number): void {
    if (this.recent.length < STATS_WINDOW) this.recent.push({ ok, ms });
    else this.recent[this.recentAt] = { ok, ms };
    this.recentAt = (this.recentAt + 1) % STATS_WINDOW;
    this.lastAttemptAt = at;
    this.failing = !ok;
    if (!ok) {
      this.lastError = error;
      this.lastErrorAt = this.lastAttemptAt;
      // Its next events go to its queue: they would most likely fail too, and hold their source meanwhile.
      this.handBack();
    }
  }

  private async deadLetter(d: Delivery, reason: string): Promise<void> {
    const dl: DeadLetter = {
      v: 1,
      message: d.message,
      message_id: d.message.id,
      endpoint_id: this.endpointId,
      event_type: d.message.type,
      attempts: d.attempt,
      reason,
      dead_at: new Date().toISOString(),
    };
    await this.deps.acks.publishStored(
      subjects.deadLetter(this.endpointId, d.message.id),
      JSON.stringify(dl),
    );
    this.deps.metrics.webhookDeadLetters.inc();
    this.deps.onExhausted(dl);
  }

  /**
   * Endpoint bookkeeping after the message is already acked or re-queued: a failure to write it (KV
   * unreachable) is logged and retried by the next attempt's outcome, and must not turn the finished
   * delivery into an error (which would lose its attempt log line).
   */
  private async bestEffort<T>(fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (err: unknown) {
      this.deps.logger.warn(
        { err: errorMessage(err), endpoint: this.endpointId },
        'endpoint state not updated',
      );
      return undefined;
    }
  }

  private async markHealthy(): Promise<void> {
    await this.deps.store.update(this.endpointId, (e) => ({
      ...e,
      failing_since: null,
      updated_at: new Date().toISOString(),
    }));
  }

  /** Notes the start of a run of failures; disables the endpoint once it has lasted too long. */
  private async markFailing(now: number): Promise<boolean> {
    const e = this.endpoint;
    if (e === undefined || e.disabled) return false;
    if (e.failing_since === null) {
      await this.deps.store.update(this.endpointId, (cur) =>
        cur.failing_since === null ? { ...cur, failing_since: new Date(now).toISOString() } : cur,
      );
      return false;
    }
    if (now - Date.parse(e.failing_since) >= this.deps.settings.disableAfterMs) {
      await this.disable('failing');
      return true;
    }
    return false;
  }

  private async disable(reason: 'gone' | 'failing'): Promise<void> {
    let changed = false;
    const updated = await this.deps.store.update(this.endpointId, (cur) => {
      if (cur.disabled) return cur;
      changed = true;
      const at = new Date().toISOString();
      return { ...cur, disabled: true, disabled_reason: reason, disabled_at: at, updated_at: at };
    });
    if (changed && updated !== undefined) {
      this.deps.metrics.webhookEndpointsDisabled.inc({ reason });
      this.deps.logger.warn({ endpoint: this.endpointId, reason }, 'webhook endpoint disabled');
      this.deps.onDisabled(updated);
    }
  }
}

/** The endpoint's durable consumer, created if missing; resolves with the deliveries it holds. */
export async function ensureEndpointConsumer(
  jsm: JetStreamManager,
  endpointId: string,
  attemptDeadlineMs: number,
): Promise<number> {
  const name = endpointConsumerName(endpointId);
  try {
    const info = await jsm.consumers.info(STREAMS.webhooks, name);
    return info.num_pending + info.num_ack_pending;
  } catch (err: unknown) {
    if (!(err instanceof JetStreamApiError && err.code === 10014)) throw err;
    await jsm.consumers.add(STREAMS.webhooks, {
      durable_name: name,
      filter_subject: subjects.delivery(endpointId),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      // An attempt in flight when a hub dies is redelivered after this; a live attempt keeps it
      // alive with working() while it waits for a token.
      ack_wait: Math.max(10_000, 2 * attemptDeadlineMs + 5_000) * NANOS_PER_MS,
      max_ack_pending: MAX_ACK_PENDING,
      max_deliver: -1,
    });
    return 0;
  }
}
