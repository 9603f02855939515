/**
 * Webhook endpoints in the GS_WH_ENDPOINTS KV bucket (key = endpoint id, value = the JSON EndpointRecord),
 * mirrored in memory and kept current by a KV watch, so every hub process serves and delivers from the
 * same endpoints.
 *
 * How the mirror stays right when writes and the watch cross:
 * - Every key's highest known KV revision is kept beside its record (a delete leaves the revision behind
 *   as a tombstone). An entry, from the watch or from this process's own write, is applied only if its
 *   revision is higher, so the watch replaying a value this process already wrote, or delivering an old
 *   value late, never moves the mirror backwards.
 * - This process's writes are applied at once (a GET right after a POST on the same hub sees it), and
 *   listeners hear of them at once; the watch's copy of the same revision is then skipped, so a listener
 *   hears of each change exactly once per process.
 * - `update` is read-modify-write on the bucket itself (not the mirror): it reads the key's latest revision
 *   and writes with `kv.update(key, value, revision)`; a concurrent write by another hub makes JetStream
 *   refuse it (error 10071) and the change is applied again to the newer value.
 * - `remove` deletes with the revision it read, so a change made meanwhile by another hub is not silently
 *   deleted unseen (it is read again and deleted then).
 * - If the watch ends while the store runs (the server deleted its consumer), a new one is started; it
 *   replays the latest value of every key, including delete markers, and the revision rule drops what is
 *   already known.
 */
import { JetStreamApiError } from '@nats-io/jetstream';
import type { KV, KvEntry } from '@nats-io/kv';
import { GatesyncError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { Pause } from '../../shared/sleep.ts';
import type { EndpointRecord } from './model.ts';

/** JetStream's "wrong last sequence": the key changed since the revision we read. */
const JS_WRONG_LAST_SEQUENCE = 10071;
/** Read-modify-write rounds before giving up on a key that keeps changing under us. */
const MAX_UPDATE_ATTEMPTS = 20;
/** How long start() waits for the watch to replay the bucket before serving anyway (milliseconds). */
const READY_TIMEOUT_MS = 10_000;
/** Pause before a watch that ended is started again, doubling up to the maximum (milliseconds). */
const REWATCH_DELAY_MS = 500;
const REWATCH_MAX_DELAY_MS = 5_000;

type Listener = (id: string, record: EndpointRecord | undefined) => void;

function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JS_WRONG_LAST_SEQUENCE;
}

function isLive(entry: KvEntry | null): entry is KvEntry {
  return entry !== null && entry.operation === 'PUT';
}

export class EndpointStore {
  private readonly records = new Map<string, EndpointRecord>();
  /** Highest KV revision seen per key, kept after a delete. */
  private readonly revisions = new Map<string, number>();
  private readonly listeners: Listener[] = [];
  private watcher: { stop(): void } | undefined;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private readonly pause = new Pause();

  constructor(readonly opts: { kv: KV; logger: Logger }) {}

  /** Loads every endpoint (waits for the watch's replay of the bucket) and keeps following changes. */
  async start(): Promise<void> {
    this.stopping = false;
    const status = await this.opts.kv.status();
    // The watch replays the latest value of every key; the stream's last sequence is the last of them.
    const lastSeq = status.streamInfo.state.messages === 0 ? 0 : status.streamInfo.state.last_seq;
    let markReady: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => {
      markReady = resolve;
    });
    if (lastSeq === 0) markReady();
    this.loop = this.follow((entry) => {
      if (entry.revision >= lastSeq || entry.delta === 0) markReady();
    });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), READY_TIMEOUT_MS);
    });
    const late = await Promise.race([ready.then(() => false), timedOut]);
    clearTimeout(timer);
    if (late) {
      this.opts.logger.warn(
        { endpoints: this.records.size },
        'webhook endpoint watch did not replay the bucket in time; serving what it has',
      );
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.watcher?.stop();
    this.pause.interrupt();
    await this.loop;
  }

  /** Every endpoint, ordered by id (ids are time-ordered: oldest first). */
  list(): EndpointRecord[] {
    return [...this.records.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Every endpoint in no particular order, without copying: for the per-event fan-out. */
  unordered(): IterableIterator<EndpointRecord> {
    return this.records.values();
  }

  get(id: string): EndpointRecord | undefined {
    return this.records.get(id);
  }

  /** Stores a new endpoint; refuses an id that exists (`endpoint_exists`). */
  async create(record: EndpointRecord): Promise<void> {
    let revision: number;
    try {
      revision = await this.opts.kv.create(record.id, JSON.stringify(record));
    } catch (err: unknown) {
      if (isWrongLastSequence(err)) {
        throw new GatesyncError('endpoint_exists', `a webhook endpoint ${record.id} already exists`, {
          cause: err,
        });
      }
      throw err;
    }
    this.apply(record.id, revision, record);
  }

  /**
   * Read-modify-write with the KV revision; retried on a concurrent change. undefined: no such endpoint.
   * `change` may run more than once (once per round) and must not have side effects; an error it throws
   * ends the update unchanged and is passed on.
   */
  async update(
    id: string,
    change: (current: EndpointRecord) => EndpointRecord,
  ): Promise<EndpointRecord | undefined> {
    for (let attempt = 1; ; attempt++) {
      const entry = await this.opts.kv.get(id);
      if (!isLive(entry)) return undefined;
      const current = entry.json<EndpointRecord>();
      // Keep what the record is: a change may not rename it.
      const next: EndpointRecord = { ...change(current), id };
      try {
        const revision = await this.opts.kv.update(id, JSON.stringify(next), entry.revision);
        this.apply(id, revision, next);
        return next;
      } catch (err: unknown) {
        if (!isWrongLastSequence(err)) throw err;
        if (attempt >= MAX_UPDATE_ATTEMPTS) {
          throw new GatesyncError(
            'revision_conflict',
            `webhook endpoint ${id} kept changing under this update; read it again and retry`,
            { cause: err },
          );
        }
      }
    }
  }

  /** Deletes an endpoint; false when there was none. */
  async remove(id: string): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      const entry = await this.opts.kv.get(id);
      if (!isLive(entry)) return false;
      try {
        await this.opts.kv.delete(id, { previousSeq: entry.revision });
      } catch (err: unknown) {
        if (!isWrongLastSequence(err) || attempt >= MAX_UPDATE_ATTEMPTS) throw err;
        continue;
      }
      // The delete marker's own revision is not returned; `entry.revision` as the tombstone is enough,
      // since the guarded delete means no other write came between that revision and the marker.
      this.revisions.set(id, Math.max(this.revisions.get(id) ?? 0, entry.revision));
      if (this.records.delete(id)) this.notify(id, undefined);
      return true;
    }
  }

  /** Called for every change seen by the watch (this process's and other hubs'); undefined = deleted. */
  onChange(listener: Listener): void {
    this.listeners.push(listener);
  }

  /** Applies a value at a revision if it is newer than what is known, and tells the listeners. */
  private apply(id: string, revision: number, record: EndpointRecord | undefined): void {
    if (revision <= (this.revisions.get(id) ?? 0)) return;
    this.revisions.set(id, revision);
    if (record === undefined) {
      if (this.records.delete(id)) this.notify(id, undefined);
      return;
    }
    this.records.set(id, record);
    this.notify(id, record);
  }

  private notify(id: string, record: EndpointRecord | undefined): void {
    for (const listener of this.listeners) {
      try {
        listener(id, record);
      } catch (err: unknown) {
        this.opts.logger.error({ err, endpoint: id }, 'webhook endpoint listener failed');
      }
    }
  }

  /** Follows the bucket until stop(), starting a new watch whenever one ends. */
  private async follow(onEntry: (entry: KvEntry) => void): Promise<void> {
    let delay = REWATCH_DELAY_MS;
    while (!this.stopping) {
      try {
        const iter = await this.opts.kv.watch();
        this.watcher = iter;
        if (this.stopping) iter.stop();
        for await (const entry of iter) {
          delay = REWATCH_DELAY_MS;
          let record: EndpointRecord | undefined;
          if (entry.operation === 'PUT') {
            try {
              record = entry.json<EndpointRecord>();
            } catch (err: unknown) {
              this.opts.logger.error(
                { err, endpoint: entry.key, revision: entry.revision },
                'webhook endpoint record is not JSON; ignored',
              );
              onEntry(entry);
              continue;
            }
          }
          this.apply(entry.key, entry.revision, record);
          onEntry(entry);
        }
      } catch (err: unknown) {
        if (!this.stopping) this.opts.logger.error({ err }, 'webhook endpoint watch failed');
      }
      if (this.stopping) return;
      this.opts.logger.warn({ retry_in_ms: delay }, 'webhook endpoint watch ended; watching again');
      await this.pause.sleep(delay);
      delay = Math.min(delay * 2, REWATCH_MAX_DELAY_MS);
    }
  }
}
