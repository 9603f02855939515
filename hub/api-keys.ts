/**
 * Bearer API keys for the hub. The admin key comes from config; more keys are minted through the API and
 * stored in the GS_CONFIG KV bucket as sha256 hashes only, so a leaked bucket leaks no usable key. A key
 * reads `gsk_<id>_<secret>`: the id finds the record, the secret is compared in constant time. Every hub
 * process watches the bucket, so a revoked key stops working everywhere within moments.
 */
import { randomBytes } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import { GatesyncError } from '../shared/errors.ts';
import { hashToken, sameHash } from '../shared/http.ts';
import { newId } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';

export interface ApiKeyRecord {
  id: string;
  name: string;
  /** Venues this key may read and act on; null means all venues (always null for admin keys). */
  venues: string[] | null;
  admin: boolean;
  hash: string;
  created_at: string;
}

export interface Caller {
  keyId: string;
  admin: boolean;
  venues: string[] | null;
}

const KEY_PATTERN = /^gsk_([A-Za-z0-9]{26})_([A-Za-z0-9_-]{43})$/;
const PREFIX = 'apikeys.';

export class ApiKeys {
  private readonly adminHash: string;
  private readonly cache = new Map<string, ApiKeyRecord>();
  private watcher: { stop(): void } | undefined;

  constructor(
    private readonly kv: KV,
    adminKey: string,
    private readonly logger: Logger,
  ) {
    this.adminHash = hashToken(adminKey);
  }

  async start(): Promise<void> {
    const iter = await this.kv.watch({ key: `${PREFIX}>` });
    this.watcher = iter;
    let resolveReady: () => void = () => undefined;
    const ready = new Promise<void>((r) => {
      resolveReady = r;
    });
    void (async () => {
      for await (const e of iter) {
        const id = e.key.slice(PREFIX.length);
        if (e.operation === 'PUT') this.cache.set(id, JSON.parse(e.string()) as ApiKeyRecord);
        else this.cache.delete(id);
        if (e.delta === 0) resolveReady();
      }
    })().catch((err: unknown) => this.logger.error({ err }, 'api key watch ended'));
    // An empty bucket never yields an entry with delta 0: do not wait for one longer than a moment.
    await Promise.race([ready, new Promise((r) => setTimeout(r, 500))]);
  }

  stop(): void {
    this.watcher?.stop();
  }

  /** The caller behind a bearer token, or `unauthorized`. */
  authenticate(token: string): Caller {
    if (sameHash(hashToken(token), this.adminHash)) return { keyId: 'admin', admin: true, venues: null };
    const m = KEY_PATTERN.exec(token);
    const rec = m === null ? undefined : this.cache.get(m[1] as string);
    if (rec === undefined || !sameHash(hashToken(token), rec.hash)) {
      throw new GatesyncError('unauthorized', 'the bearer token is not a valid API key');
    }
    return { keyId: rec.id, admin: rec.admin, venues: rec.venues };
  }

  async create(
    name: string,
    venues: string[] | null,
    admin: boolean,
  ): Promise<{ key: string; record: ApiKeyRecord }> {
    const id = newId();
    const key = `gsk_${id}_${randomBytes(32).toString('base64url')}`;
    const record: ApiKeyRecord = {
      id,
      name,
      venues,
      admin,
      hash: hashToken(key),
      created_at: new Date().toISOString(),
    };
    await this.kv.create(`${PREFIX}${id}`, JSON.stringify(record));
    this.cache.set(id, record);
    return { key, record };
  }

  list(): Omit<ApiKeyRecord, 'hash'>[] {
    return [...this.cache.values()].map(({ hash: _hash, ...rest }) => rest);
  }

  async remove(id: string): Promise<boolean> {
    if (!this.cache.has(id)) return false;
    await this.kv.delete(`${PREFIX}${id}`);
    this.cache.delete(id);
    return true;
  }
}

export function assertVenueAccess(caller: Caller, venue: string): void {
  if (caller.venues !== null && !caller.venues.includes(venue)) {
    throw new GatesyncError('forbidden', `this API key may not act on venue ${venue}`);
  }
}

export function assertAdmin(caller: Caller): void {
  if (!caller.admin) throw new GatesyncError('forbidden', 'this needs an admin API key');
}
