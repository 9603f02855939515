/**
 * Webhook endpoints in the GS_WH_ENDPOINTS KV bucket, mirrored in memory and kept current by a watch.
 * STUB: being written (see the webhook endpoints work package).
 */
import type { KV } from '@nats-io/kv';
import type { Logger } from '../../shared/logger.ts';
import type { EndpointRecord } from './model.ts';

export class EndpointStore {
  constructor(readonly opts: { kv: KV; logger: Logger }) {}
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  list(): EndpointRecord[] {
    return [];
  }
  get(_id: string): EndpointRecord | undefined {
    return undefined;
  }
  /** Stores a new endpoint; refuses an id that exists. */
  async create(_record: EndpointRecord): Promise<void> {
    throw new Error('not implemented');
  }
  /** Read-modify-write with the KV revision; retried on a concurrent change. undefined: no such endpoint. */
  async update(
    _id: string,
    _change: (current: EndpointRecord) => EndpointRecord,
  ): Promise<EndpointRecord | undefined> {
    throw new Error('not implemented');
  }
  async remove(_id: string): Promise<boolean> {
    throw new Error('not implemented');
  }
  /** Called for every change seen by the watch (this process's and other hubs'); undefined = deleted. */
  onChange(_listener: (id: string, record: EndpointRecord | undefined) => void): void {}
}
