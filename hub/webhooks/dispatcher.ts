/**
 * Turns events into webhook messages and queues one delivery per subscribed endpoint.
 *
 * A message is stored once in GS_WH_MESSAGES (for GET /v1/webhooks/messages/{id}, resend and redrive) and
 * queued as one GS_WEBHOOKS message per endpoint (`gs.wh.<endpoint>`), each published with a Nats-Msg-Id
 * derived from the message, the endpoint and the attempt, so a source re-processed after a crash queues
 * nothing twice inside the duplicate window. Message ids of events are derived from what caused them (the
 * check-in id, the ticket revision), so even a later re-send carries the same `webhook-id`.
 */
import { hash } from 'node:crypto';
import { GatesyncError } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import type { NatsConnection } from '../../shared/nats.ts';
import type { PubAcks } from '../../shared/pub-acks.ts';
import { subjects } from '../../shared/subjects.ts';
import type { HubMetrics } from '../metrics.ts';
import type { EndpointStore } from './endpoints.ts';
import type { Delivery, EndpointRecord, EventType, WebhookMessage } from './model.ts';

/** A message id derived from what caused the event: the same cause gives the same `webhook-id`. */
export function derivedMessageId(type: EventType, cause: string): string {
  const digest = hash('sha256', `${type}\u0000${cause}`, 'base64url');
  return `msg_${digest.slice(0, 27)}`;
}

/**
 * Bodies already serialised, by message: a message made here is serialised once for its size check, and
 * its direct attempt, its stored copy and any attempt in this process reuse that string.
 */
const bodies = new WeakMap<WebhookMessage, string>();

/** The JSON body receivers get: `{ type, timestamp, data }`. */
export function messageBody(m: WebhookMessage): string {
  let body = bodies.get(m);
  if (body === undefined) {
    body = JSON.stringify({ type: m.type, timestamp: m.timestamp, data: m.data });
    bodies.set(m, body);
  }
  return body;
}

/** The message as GS_WH_MESSAGES keeps it: every field of WebhookMessage, the body's written once. */
export function storedMessage(m: WebhookMessage): string {
  const head = `{"id":${JSON.stringify(m.id)},"venue":${JSON.stringify(m.venue)},"order_key":${JSON.stringify(m.order_key)},`;
  return head + messageBody(m).slice(1);
}

export function subscribes(e: EndpointRecord, m: WebhookMessage): boolean {
  if (!e.event_types.includes(m.type)) return false;
  if (e.venues !== null && m.venue !== null && !e.venues.includes(m.venue)) return false;
  // Venue-less events (operational, agents of no venue) go to every endpoint that asked for the type.
  return true;
}

export interface DispatcherOptions {
  /** Acknowledged JetStream publishes without a nats.js request each (see pub-acks.ts). */
  acks: PubAcks;
  /** For the plain publish of a source event's message copy (`dispatch`). */
  nc: NatsConnection;
  store: EndpointStore;
  logger: Logger;
  metrics: HubMetrics;
  maxPayloadBytes: number;
}

/** What the dispatcher asks of an endpoint's worker (worker.ts): a direct first attempt, and notice of a queued one. */
export interface DirectWorker {
  offer(d: Delivery): Promise<void> | false;
  noteQueued(d: Delivery): void;
}

export class Dispatcher {
  private workers: (endpointId: string) => DirectWorker | undefined = () => undefined;
  /** Sources waiting for room in their window of events in progress. */
  private outOfRoom = 0;

  constructor(private readonly opts: DispatcherOptions) {}

  /** Where the running workers are found, for direct first attempts. */
  useWorkers(lookup: (endpointId: string) => DirectWorker | undefined): void {
    this.workers = lookup;
  }

  /** A source is (true) or is no longer (false) waiting for room to take more events. */
  roomWanted(waiting: boolean): void {
    this.outOfRoom += waiting ? 1 : -1;
  }

  /**
   * True when a source is out of room and more than one endpoint is enabled: an endpoint whose direct
   * attempts wait for slots may then be holding the others' events back.
   */
  crowded(): boolean {
    if (this.outOfRoom === 0) return false;
    let enabled = 0;
    for (const e of this.opts.store.unordered()) if (!e.disabled && ++enabled > 1) return true;
    return false;
  }

  /** True when some enabled endpoint subscribes to one of `types`. */
  wanted(types: readonly EventType[]): boolean {
    for (const e of this.opts.store.unordered()) {
      if (!e.disabled && types.some((t) => e.event_types.includes(t))) return true;
    }
    return false;
  }

  /** Builds a message, refusing one whose body is over the size limit. */
  message(input: {
    id?: string;
    type: EventType;
    data: Record<string, unknown>;
    venue?: string | null;
    orderKey?: string | null;
    timestamp?: string;
  }): WebhookMessage {
    const m: WebhookMessage = {
      id: input.id ?? newId('msg_'),
      type: input.type,
      timestamp: input.timestamp ?? new Date().toISOString(),
      data: input.data,
      venue: input.venue ?? null,
      order_key: input.orderKey ?? null,
    };
    const size = Buffer.byteLength(messageBody(m));
    if (size > this.opts.maxPayloadBytes) {
      this.opts.metrics.webhookEventsRefused.inc({ reason: 'payload_too_large' });
      throw new GatesyncError(
        'payload_too_large',
        `the ${m.type} message body would be ${size} bytes; the limit is ${this.opts.maxPayloadBytes} (GATESYNC_WEBHOOK_MAX_PAYLOAD_BYTES)`,
      );
    }
    return m;
  }

  /**
   * Stores the message and queues it to every enabled endpoint that subscribes to it (but `except`).
   * Resolves once JetStream has stored all of it; returns how many deliveries were queued.
   */
  async publish(m: WebhookMessage, except?: string): Promise<number> {
    const targets: EndpointRecord[] = [];
    for (const e of this.opts.store.unordered()) {
      if (!e.disabled && e.id !== except && subscribes(e, m)) targets.push(e);
    }
    if (targets.length === 0) return 0;
    await Promise.all([
      this.storeMessage(m),
      ...targets.map((e) => this.queue(m, e.id, { attempt: 1, trigger: 'event', dueAt: 0 })),
    ]);
    this.opts.metrics.webhookMessages.inc({ type: m.type }, 1);
    return targets.length;
  }

  /**
   * As `publish`, for a message whose cause is held unacked by its caller (a stream source): each
   * endpoint's first attempt is offered to its worker directly, and queued in GS_WEBHOOKS only when the
   * worker refuses it or hands it back. Resolves once, for every endpoint, the first attempt succeeded or
   * what comes next (its retry, its dead letter, or the first attempt itself) is stored, and the message
   * is stored in GS_WH_MESSAGES; only then may the caller ack the cause. Rejects when something could
   * not be stored: the cause is then processed again, and what was sent directly is sent again with the
   * same webhook-id.
   */
  async dispatch(m: WebhookMessage): Promise<number> {
    const work: Promise<unknown>[] = [];
    for (const e of this.opts.store.unordered()) {
      if (e.disabled || !subscribes(e, m)) continue;
      const d: Delivery = {
        v: 1,
        message: m,
        endpoint_id: e.id,
        chain: `${m.id}.${e.id}`,
        attempt: 1,
        due_at: 0,
        trigger: 'event',
      };
      // The worker queues it itself when it hands it back.
      const direct = this.workers(e.id)?.offer(d) ?? false;
      work.push(direct === false ? this.queueDelivery(d) : direct);
    }
    if (work.length === 0) return 0;
    this.copyMessage(m);
    if (work.length === 1) await work[0];
    else await Promise.all(work);
    this.opts.metrics.webhookMessages.inc({ type: m.type }, 1);
    return work.length - 1;
  }

  /**
   * The message's copy in GS_WH_MESSAGES as a plain publish, no PubAck awaited (a source event's message,
   * see `dispatch`). It leaves on the connection before the event's ack, which the caller sends only
   * later, so the server has it before it hears the event is done; it is lost only if the stream refuses
   * it (as the attempt log would be). The copy serves the API and resend; deliveries carry the message.
   */
  copyMessage(m: WebhookMessage): void {
    // No Nats-Msg-Id: the stream keeps one message per subject, so a copy sent again (the event
    // processed again) replaces the same content, and the server tracks no id for it.
    try {
      this.opts.nc.publish(subjects.message(m.id), Buffer.from(storedMessage(m)));
    } catch (err: unknown) {
      this.opts.logger.warn({ err: String(err), message: m.id }, 'webhook message copy not written');
    }
  }

  async storeMessage(m: WebhookMessage): Promise<void> {
    await this.opts.acks.publishStored(subjects.message(m.id), storedMessage(m), { msgID: m.id });
  }

  /** Queues one delivery of `m` to one endpoint. */
  async queue(
    m: WebhookMessage,
    endpointId: string,
    at: { attempt: number; trigger: Delivery['trigger']; dueAt: number; chain?: string },
  ): Promise<void> {
    // Event deliveries have a derived chain (a crash between queueing and acking its source re-queues
    // the same Nats-Msg-Id, which the stream drops); a resend, recovery, redrive or test starts a new one.
    const chain = at.chain ?? (at.trigger === 'event' ? `${m.id}.${endpointId}` : `${at.trigger}_${newId()}`);
    const d: Delivery = {
      v: 1,
      message: m,
      endpoint_id: endpointId,
      chain,
      attempt: at.attempt,
      due_at: at.dueAt,
      trigger: at.trigger,
    };
    await this.queueDelivery(d);
  }

  /** Queues one delivery as it is (its chain, attempt and due time) in GS_WEBHOOKS. */
  async queueDelivery(d: Delivery): Promise<void> {
    this.workers(d.endpoint_id)?.noteQueued(d);
    await this.opts.acks.publishStored(subjects.delivery(d.endpoint_id), JSON.stringify(d), {
      msgID: `${d.chain}.${d.attempt}`,
    });
  }
}
