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
import type { EventType, WebhookMessage } from './model.ts';

const NANOS_PER_MS = 1_000_000;
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
  }

  private async round(loop: RetryLoop): Promise<void> {
    const consumer = await this.deps.js.consumers.get(this.spec.stream, this.spec.durable);
    // Idle heartbeats every 500 ms: a fetch the server has stopped serving is given up after two missed
    // ones (1 s), not 2 s. bench:e2e caught such a fetch twice (after a bench that deleted a large store):
    // no message and no heartbeat for 2 s while check-ins kept arriving, then a retry after a back-off.
    const iter = await consumer.fetch({ max_messages: 256, expires: 5_000, idle_heartbeat: 500 });
    loop.track(iter);
    let chunk: JsMsg[] = [];
    try {
      for await (const m of iter) {
        chunk.push(m);
        if (chunk.length >= 128 || m.info.pending === 0) {
          await this.processChunk(chunk);
          chunk = [];
        }
      }
    } catch (err: unknown) {
      // Missed heartbeats end this fetch, not the reader: the next round starts at once, no back-off.
      if (!(err instanceof Error && err.message === 'heartbeats missed')) throw err;
      this.deps.logger.info(
        { source: this.spec.durable },
        'webhook source fetch went silent; fetching again',
      );
    }
    if (chunk.length > 0) await this.processChunk(chunk);
  }

  /** Different tickets in parallel; one ticket's events queued in stream order. */
  private async processChunk(chunk: JsMsg[]): Promise<void> {
    if (!this.deps.dispatcher.wanted(this.spec.types)) {
      // Nobody subscribes: decoding and building messages would be work for nothing.
      for (const m of chunk) m.ack();
      return;
    }
    const groups = new Map<string, { m: JsMsg; msg: WebhookMessage | null }[]>();
    for (const m of chunk) {
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
        continue;
      }
      const key = msg?.order_key ?? m.subject;
      const list = groups.get(key) ?? [];
      list.push({ m, msg });
      groups.set(key, list);
    }
    // Acked together once the whole chunk is queued: one socket write for the chunk's acks instead of one
    // per arriving batch of PubAcks. A crash before the acks re-queues the chunk under the same
    // Nats-Msg-Ids, which GS_WEBHOOKS drops as duplicates.
    const done: JsMsg[] = [];
    await Promise.all(
      [...groups.values()].map(async (list) => {
        for (const [i, { m, msg }] of list.entries()) {
          try {
            if (msg !== null) await this.deps.dispatcher.publish(msg);
            done.push(m);
          } catch (err: unknown) {
            this.deps.logger.warn(
              { err: errorMessage(err), seq: m.seq },
              'webhook fan-out failed; will retry',
            );
            // This ticket's later events wait for it: queued now, they would overtake it.
            for (const later of list.slice(i)) later.m.nak(1_000);
            return;
          }
        }
      }),
    );
    for (const m of done) m.ack();
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
        return dispatcher.message({
          id: derivedMessageId(type, c.id),
          type,
          venue: c.venue,
          orderKey: c.ticket_id,
          timestamp: iso(c.scanned_at),
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
            scanned_at: iso(c.scanned_at),
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
