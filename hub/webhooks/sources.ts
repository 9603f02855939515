/**
 * Where webhook messages come from: durable consumers of the hub's own streams (check-ins, conflicts,
 * ticket changes), each acked only once its messages are queued, and a watch of agents' heartbeats that
 * turns presence changes into `agent.online` / `agent.offline`.
 *
 * The stream consumers start at "new" when first created: an endpoint hears about events from the moment
 * the hub first ran with webhooks, not the whole retained history. After that they are durable: a hub that
 * was down catches up on what it missed.
 */
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { type ConflictRecord, decodeCheckin } from '../../shared/checkins.ts';
import { decode } from '../../shared/codec.ts';
import { errorMessage } from '../../shared/errors.ts';
import { decodeTicketEvent } from '../../shared/events.ts';
import type { Heartbeat } from '../../shared/heartbeat.ts';
import type { Logger } from '../../shared/logger.ts';
import { RetryLoop } from '../../shared/retry-loop.ts';
import { STREAMS, subjects } from '../../shared/subjects.ts';
import type { AgentBoard } from '../agent-board.ts';
import type { HubMetrics } from '../metrics.ts';
import { type Dispatcher, derivedMessageId } from './dispatcher.ts';
import { KEEP_ALIVE_SWEEP_MS, keepHeldAlive } from './keep-alive.ts';
import type { EventType, WebhookMessage } from './model.ts';
import { ackInNextTurn } from './next-turn.ts';

const NANOS_PER_MS = 1_000_000;
/** Events per pull. */
const FETCH_BATCH = 256;
/**
 * Most events in progress at once (being sent directly, queued, or waiting behind their ticket's earlier
 * event); the reader waits for room before taking more. Bounds what a slow endpoint can hold: its own
 * concurrency in flight plus what waits DIRECT_WAIT_MS (worker.ts) for its slots.
 */
const WINDOW = 256;
const iso = (ms: number) => new Date(ms).toISOString();

interface SourceSpec {
  stream: string;
  durable: string;
  filter: string;
  /** The types this source can produce: with no enabled endpoint wanting any, events are acked unread. */
  types: EventType[];
  /** The message an event becomes, or null when it is not a webhook event. */
  toMessage(m: JsMsg): WebhookMessage | null;
}

export class StreamSource {
  private loop: RetryLoop | undefined;
  /** The reader was stopped (or never run) because nothing subscribed: skip to "new" when it resumes. */
  private idled = false;
  private stopping = false;
  private changes: Promise<void> = Promise.resolve();
  /** Events being processed, with when they last told the server they are alive. */
  private readonly held = new Map<JsMsg, number>();
  /** Events fetched in this turn, taken together in the next. */
  private arrived: JsMsg[] = [];
  /** The last event in progress of each ticket (order key): resolves true once it settled well. */
  private readonly tails = new Map<string, Promise<boolean>>();
  /** The reader, waiting for the number of events in progress to fall under WINDOW. */
  private space: (() => void) | undefined;
  private onIdle: (() => void) | undefined;
  private keepAlive: NodeJS.Timeout | undefined;

  constructor(
    private readonly spec: SourceSpec,
    private readonly deps: {
      js: JetStreamClient;
      jsm: JetStreamManager;
      dispatcher: Dispatcher;
      logger: Logger;
      metrics: HubMetrics;
    },
  ) {}

  async start(): Promise<void> {
    await this.ensureConsumer(false);
    // Events in progress (a slow receiver, a ticket's earlier event) tell the server they are alive.
    this.keepAlive = setInterval(() => keepHeldAlive(this.held), KEEP_ALIVE_SWEEP_MS);
    this.keepAlive.unref();
    this.idled = !this.deps.dispatcher.wanted(this.spec.types);
    await this.refresh();
  }

  /**
   * Runs the reader only while some enabled endpoint wants this source's types, so a hub without
   * webhook subscribers spends nothing on them. Called after every endpoint change.
   */
  refresh(): Promise<void> {
    this.changes = this.changes
      .then(() => this.apply())
      .catch((err: unknown) => {
        this.deps.logger.error(
          { err: errorMessage(err), source: this.spec.durable },
          'webhook source not (re)started',
        );
      });
    return this.changes;
  }

  private async apply(): Promise<void> {
    if (this.stopping) return;
    const wanted = this.deps.dispatcher.wanted(this.spec.types);
    if (wanted && this.loop === undefined) {
      // Events that arrived while nobody subscribed are skipped, as if the consumer were new.
      if (this.idled) await this.ensureConsumer(true);
      this.idled = false;
      const loop: RetryLoop = new RetryLoop({
        logger: this.deps.logger,
        what: `webhook source ${this.spec.durable}`,
        round: () => this.round(loop),
      });
      this.loop = loop;
      loop.start();
    } else if (!wanted && this.loop !== undefined) {
      const loop = this.loop;
      this.loop = undefined;
      this.idled = true;
      await loop.stop();
    }
  }

  /** The durable consumer, created at "new" if missing, or re-created at "new" when `reset`. */
  private async ensureConsumer(reset: boolean): Promise<void> {
    const { jsm } = this.deps;
    if (reset) {
      await jsm.consumers.delete(this.spec.stream, this.spec.durable).catch(() => false);
    } else {
      try {
        await jsm.consumers.info(this.spec.stream, this.spec.durable);
        return;
      } catch (err: unknown) {
        if (!(err instanceof JetStreamApiError && err.code === 10014)) throw err;
      }
    }
    await jsm.consumers.add(this.spec.stream, {
      durable_name: this.spec.durable,
      filter_subject: this.spec.filter,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.New,
      ack_wait: 30_000 * NANOS_PER_MS,
      max_ack_pending: 5_000,
      max_deliver: -1,
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.changes;
    await this.loop?.stop();
    this.loop = undefined;
    // What is in progress settles (and is acked) before the source counts as stopped.
    if (this.held.size > 0) await new Promise<void>((resolve) => (this.onIdle = resolve));
    if (this.keepAlive !== undefined) clearInterval(this.keepAlive);
    this.keepAlive = undefined;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  private async round(loop: RetryLoop): Promise<void> {
    const consumer = await this.deps.js.consumers.get(this.spec.stream, this.spec.durable);
    // Idle heartbeats every 500 ms: a fetch the server has stopped serving is given up after two missed
    // ones (1 s), not 2 s. bench:e2e caught such a fetch twice (after a bench that deleted a large store):
    // no message and no heartbeat for 2 s while check-ins kept arriving, then a retry after a back-off.
    const iter = await consumer.fetch({ max_messages: FETCH_BATCH, expires: 5_000, idle_heartbeat: 500 });
    loop.track(iter);
    try {
      for await (const m of iter) {
        if (this.held.size + this.arrived.length >= WINDOW) {
          this.deps.dispatcher.roomWanted(true);
          await new Promise<void>((resolve) => (this.space = resolve));
          this.deps.dispatcher.roomWanted(false);
        }
        // Taken together once the iterator has yielded what arrived: it yields one event per microtask,
        // and nats.js flushes its buffer on a microtask, so publishes made here would cost a socket write
        // each. A tick, not the next turn of the loop: a request started from a setImmediate callback is
        // written by undici only in the next turn, after a whole poll phase.
        if (this.arrived.length === 0) process.nextTick(() => this.takeArrived());
        this.arrived.push(m);
      }
    } catch (err: unknown) {
      // Missed heartbeats end this fetch, not the reader: the next round starts at once, no back-off.
      if (!(err instanceof Error && err.message === 'heartbeats missed')) throw err;
      this.deps.logger.info(
        { source: this.spec.durable },
        'webhook source fetch went silent; fetching again',
      );
    }
  }

  private takeArrived(): void {
    for (const m of this.arrived.splice(0)) this.take(m);
  }

  /**
   * Starts processing one event, not waiting for it: its webhook message goes to every subscribed
   * endpoint (a direct first attempt or a queued delivery, see Dispatcher.dispatch) and the event is
   * acked once all of it is settled. Different tickets go in parallel; one ticket's events one after the
   * other, in stream order, and when one fails the ticket's later ones are put back with it, so they
   * cannot overtake it.
   */
  private take(m: JsMsg): void {
    let msg: WebhookMessage | null;
    try {
      msg = this.spec.toMessage(m);
    } catch (err: unknown) {
      // Oversized or undecodable: refused (counted by the dispatcher or here), never retried forever.
      this.deps.logger.warn(
        { err: errorMessage(err), subject: m.subject, seq: m.seq },
        'event not turned into a webhook message',
      );
      if (!(err instanceof Error && 'code' in err && err.code === 'payload_too_large')) {
        this.deps.metrics.webhookEventsRefused.inc({ reason: 'malformed' });
      }
      m.term();
      return;
    }
    if (msg === null) {
      ackInNextTurn(m);
      return;
    }
    const key = msg.order_key ?? m.subject;
    const previous = this.tails.get(key);
    this.held.set(m, Date.now());
    let run: Promise<boolean> | undefined;
    run = (async () => {
      try {
        if (previous !== undefined && !(await previous)) {
          m.nak(1_000); // an earlier event of this ticket failed: this one goes back with it
          return false;
        }
        await this.deps.dispatcher.dispatch(msg);
        // Acks of everything settled in one turn leave in one socket write.
        ackInNextTurn(m);
        return true;
      } catch (err: unknown) {
        this.deps.logger.warn({ err: errorMessage(err), seq: m.seq }, 'webhook fan-out failed; will retry');
        m.nak(1_000);
        return false;
      } finally {
        this.held.delete(m);
        if (this.tails.get(key) === run) this.tails.delete(key);
        const space = this.space;
        this.space = undefined;
        space?.();
        if (this.held.size === 0) this.onIdle?.();
      }
    })();
    this.tails.set(key, run);
  }
}

export function streamSources(dispatcher: Dispatcher): SourceSpec[] {
  return [
    {
      stream: STREAMS.checkins,
      durable: 'gs_hub_wh_checkins',
      filter: subjects.allCheckins,
      types: ['checkin.created', 'checkin.rejected'],
      toMessage(m) {
        const c = decodeCheckin(m.data);
        const type = c.decision === 'admit' ? 'checkin.created' : 'checkin.rejected';
        const scannedAt = iso(c.scanned_at);
        return dispatcher.message({
          id: derivedMessageId(type, c.id),
          type,
          venue: c.venue,
          orderKey: c.ticket_id,
          timestamp: scannedAt,
          data: {
            checkin_id: c.id,
            venue: c.venue,
            agent: c.agent,
            gate: c.gate,
            ticket_id: c.ticket_id,
            direction: c.direction,
            decision: c.decision,
            reason: c.reason,
            scanner: c.scanner,
            method: c.method,
            unsynced_ticket: c.unsynced_ticket,
            seq: c.seq,
            scanned_at: scannedAt,
          },
        });
      },
    },
    {
      stream: STREAMS.conflicts,
      durable: 'gs_hub_wh_conflicts',
      filter: subjects.allConflicts,
      types: ['checkin.conflict'],
      toMessage(m) {
        const c = decode(m.data) as ConflictRecord;
        const side = (s: ConflictRecord['first']) => ({
          checkin_id: s.checkin_id,
          agent: s.agent,
          gate: s.gate,
          scanned_at: iso(s.scanned_at),
        });
        return dispatcher.message({
          id: derivedMessageId('checkin.conflict', c.id),
          type: 'checkin.conflict',
          venue: c.venue,
          orderKey: c.ticket_id,
          timestamp: iso(c.detected_at),
          data: {
            conflict_id: c.id,
            venue: c.venue,
            ticket_id: c.ticket_id,
            first: side(c.first),
            second: side(c.second),
            detected_at: iso(c.detected_at),
          },
        });
      },
    },
    {
      stream: STREAMS.tickets,
      durable: 'gs_hub_wh_tickets',
      filter: subjects.allTickets,
      types: ['ticket.issued', 'ticket.revoked'],
      toMessage(m) {
        const e = decodeTicketEvent(m.data);
        const t = e.ticket;
        // The QR token is an entry credential: it is never sent to subscribers.
        return dispatcher.message({
          id: derivedMessageId(e.type, e.id),
          type: e.type,
          venue: t.venue,
          orderKey: t.id,
          timestamp: iso(e.at),
          data: {
            ticket_id: t.id,
            venue: t.venue,
            rev: e.rev,
            holder: t.holder,
            tier: t.tier,
            seat: t.seat,
            gates: t.gates,
            valid_from: iso(t.valid_from),
            valid_until: iso(t.valid_until),
            status: t.status,
            revoked_reason: t.revoked_reason,
          },
        });
      },
    },
  ];
}

/**
 * Turns the agent board's heartbeats into presence events. An agent whose last heartbeat is older than
 * `offlineAfterMs` goes offline; one that sends a heartbeat again comes online. Presence known when the
 * hub starts raises nothing.
 */
export class AgentPresence {
  /** Online or not as last announced, by the board's key `<venue>.<agent>`. */
  private readonly online = new Map<string, boolean>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly deps: {
      board: AgentBoard;
      dispatcher: Dispatcher;
      logger: Logger;
      offlineAfterMs: number;
    },
  ) {}

  start(): void {
    const now = Date.now();
    for (const [key, a] of this.deps.board.entries()) {
      this.online.set(key, now - a.receivedAt < this.deps.offlineAfterMs);
    }
    this.deps.board.onHeartbeat((key, a) => {
      if (this.stopped) return;
      const was = this.online.get(key);
      this.online.set(key, true);
      if (was === false) this.emit('agent.online', a.hb, Date.now());
    });
    this.timer = setInterval(() => this.sweep(), 1_000);
    this.timer.unref();
  }

  private sweep(): void {
    const now = Date.now();
    for (const [key, a] of this.deps.board.entries()) {
      if (this.online.get(key) === true && now - a.receivedAt >= this.deps.offlineAfterMs) {
        this.online.set(key, false);
        this.emit('agent.offline', a.hb, now);
      }
    }
  }

  private emit(type: 'agent.online' | 'agent.offline', hb: Heartbeat, at: number): void {
    const msg = this.deps.dispatcher.message({
      id: derivedMessageId(type, `${hb.venue}.${hb.agent}.${hb.sent_at}`),
      type,
      venue: hb.venue,
      orderKey: `${hb.venue}.${hb.agent}`,
      timestamp: iso(at),
      data: {
        venue: hb.venue,
        agent: hb.agent,
        gate: hb.gate,
        last_heartbeat_at: iso(hb.sent_at),
        outbox_depth: hb.outbox_depth,
        last_event_seq: hb.last_event_seq,
      },
    });
    this.deps.dispatcher.publish(msg).catch((err: unknown) => {
      this.deps.logger.warn({ err: errorMessage(err), type }, 'agent presence event not queued');
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
  }
}
