/** The hub's settings, read once at start-up. Every setting is documented in docs/configuration.md. */
import { join } from 'node:path';
import { OTHER_KNOWN_SETTINGS, Settings, type SettingsSource } from '../shared/config.ts';
import { HEARTBEAT_INTERVAL_MS } from '../shared/heartbeat.ts';
import {
  loadSigningKeyFile,
  type PublicKeyInfo,
  parseTrustedKeys,
  type SigningKey,
} from '../shared/signing.ts';
import { DEFAULT_RETRY_SCHEDULE_MS, parseRetrySchedule } from './webhooks/retry-policy.ts';
import { allowListProblems } from './webhooks/ssrf.ts';

export interface HubConfig {
  /** Empty: start the embedded nats-server. */
  natsUrls: string[];
  natsCredsFile: string | undefined;
  natsUser: string | undefined;
  natsPass: string | undefined;
  natsToken: string | undefined;
  host: string;
  port: number;
  adminKey: string;
  signingKey: SigningKey;
  /** Older keys still published in keys.json during a rotation. */
  extraPublicKeys: Map<string, PublicKeyInfo>;
  dataDir: string;
  batchBodyLimit: number;
  checkinRetentionDays: number;
  webhooks: WebhookSettings;
  /** Copies of each stream and bucket (GATESYNC_STREAM_REPLICAS): 3 on a three-node NATS cluster. */
  streamReplicas: number;
  /** An agent whose last heartbeat is older than this is offline (agent.offline event, dashboard). */
  agentOfflineAfterMs: number;
  describe: Record<string, string>;
  /** GATESYNC_* names no setting read (misspelled?); logged as a warning at start-up. */
  unknownSettings: string[];
}

export interface WebhookSettings {
  /** Subnets (CIDR) whose special addresses receivers may use, and where http: is accepted. */
  allowedCidrs: string[];
  /** Accept http: URLs everywhere (development only). */
  allowHttp: boolean;
  /** Delays after each failed attempt, in milliseconds. */
  retryScheduleMs: number[];
  /** Least wait after 429, 408, 502-504 and timeouts. */
  throttleFloorMs: number;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  /** Bytes of a receiver's response body kept in the attempt log. */
  responseBodyCap: number;
  /** Largest JSON body a message may have; bigger events are refused when created. */
  maxPayloadBytes: number;
  /** An endpoint failing continuously this long is disabled. */
  disableAfterMs: number;
  retentionDays: number;
  /** Consecutive failures that open an endpoint's circuit breaker, and how long it stays open at first. */
  breakerFailures: number;
  breakerCoolDownMs: number;
  /** Connections per receiver origin. */
  connectionsPerOrigin: number;
}

function duration(s: Settings, name: string, def: string): number {
  return (
    s.custom(name, (v) => {
      const parsed = parseRetrySchedule(v ?? def);
      if (parsed.length !== 1) throw new Error('must be one duration like 500ms, 5s, 5m, 2h or 1d');
      return parsed[0] as number;
    }) ?? (parseRetrySchedule(def)[0] as number)
  );
}

function loadWebhookSettings(s: Settings): WebhookSettings {
  const cidrs =
    s.custom('GATESYNC_WEBHOOK_ALLOW_CIDRS', (v) => {
      const list = (v ?? '')
        .split(',')
        .map((c) => c.trim())
        .filter((c) => c !== '');
      const problems = allowListProblems(list);
      if (problems.length > 0) throw new Error(problems.join('; '));
      return list;
    }) ?? [];
  return {
    allowedCidrs: cidrs,
    allowHttp: s.bool('GATESYNC_WEBHOOK_ALLOW_HTTP', false),
    retryScheduleMs: s.custom('GATESYNC_WEBHOOK_RETRY_SCHEDULE', (v) =>
      v === undefined ? [...DEFAULT_RETRY_SCHEDULE_MS] : parseRetrySchedule(v),
    ) ?? [...DEFAULT_RETRY_SCHEDULE_MS],
    throttleFloorMs: duration(s, 'GATESYNC_WEBHOOK_THROTTLE_FLOOR', '1m'),
    connectTimeoutMs: duration(s, 'GATESYNC_WEBHOOK_CONNECT_TIMEOUT', '5s'),
    headersTimeoutMs: duration(s, 'GATESYNC_WEBHOOK_HEADERS_TIMEOUT', '15s'),
    bodyTimeoutMs: duration(s, 'GATESYNC_WEBHOOK_BODY_TIMEOUT', '15s'),
    responseBodyCap: s.int('GATESYNC_WEBHOOK_RESPONSE_BODY_CAP', { default: 4096, min: 0, max: 1024 * 1024 }),
    maxPayloadBytes: s.int('GATESYNC_WEBHOOK_MAX_PAYLOAD_BYTES', {
      default: 256 * 1024,
      min: 1024,
      max: 8 * 1024 * 1024,
    }),
    disableAfterMs: duration(s, 'GATESYNC_WEBHOOK_DISABLE_AFTER', '5d'),
    retentionDays: s.int('GATESYNC_WEBHOOK_RETENTION_DAYS', { default: 30, min: 1, max: 365 }),
    breakerFailures: s.int('GATESYNC_WEBHOOK_BREAKER_FAILURES', { default: 10, min: 1, max: 10_000 }),
    breakerCoolDownMs: duration(s, 'GATESYNC_WEBHOOK_BREAKER_COOLDOWN', '30s'),
    connectionsPerOrigin: s.int('GATESYNC_WEBHOOK_CONNECTIONS_PER_ORIGIN', {
      default: 32,
      min: 1,
      max: 1024,
    }),
  };
}

export function loadHubConfig(source: SettingsSource, opts: { allowMissingKey?: boolean } = {}): HubConfig {
  const s = new Settings(source);
  const natsUrl = s.optionalString('GATESYNC_NATS_URL', {
    pattern: /^(nats|tls):\/\/[^\s,]+(,(nats|tls):\/\/[^\s,]+)*$/,
    hint: 'must be nats://host:port (comma-separated for a cluster)',
  });
  const natsCredsFile = s.optionalString('GATESYNC_NATS_CREDS');
  const natsUser = s.optionalString('GATESYNC_NATS_USER');
  const natsPass = s.optionalString('GATESYNC_NATS_PASS', { secret: true });
  const natsToken = s.optionalString('GATESYNC_NATS_TOKEN', { secret: true });
  const host = s.string('GATESYNC_HUB_HOST', { default: '127.0.0.1' });
  const port = s.int('GATESYNC_HUB_PORT', { default: 8080, min: 0, max: 65535 });
  const adminKey = s.requiredString('GATESYNC_ADMIN_KEY', {
    secret: true,
    pattern: /^\S{24,256}$/,
    hint: 'at least 24 characters; make one with `openssl rand -base64 32`',
  });
  const keyPath = s.optionalString('GATESYNC_SIGNING_KEY_FILE');
  let signingKey: SigningKey | undefined;
  if (keyPath === undefined) {
    if (opts.allowMissingKey !== true) {
      s.problem(
        'GATESYNC_SIGNING_KEY_FILE',
        'is required: create one with `gatesync keygen --out hub-key.json`',
      );
    }
  } else {
    signingKey = s.custom('GATESYNC_SIGNING_KEY_FILE', () => loadSigningKeyFile(keyPath));
  }
  const extraPublicKeys =
    s.custom('GATESYNC_EXTRA_PUBLIC_KEYS', (v) => (v === undefined ? new Map() : parseTrustedKeys(v))) ??
    new Map<string, PublicKeyInfo>();
  const dataDir = s.string('GATESYNC_DATA_DIR', { default: join(process.cwd(), '.data', 'hub') });
  const batchBodyLimit = s.int('GATESYNC_BATCH_BODY_LIMIT', {
    default: 16 * 1024 * 1024,
    min: 1024,
    max: 256 * 1024 * 1024,
  });
  const checkinRetentionDays = s.int('GATESYNC_CHECKIN_RETENTION_DAYS', { default: 30, min: 1, max: 3650 });
  const webhooks = loadWebhookSettings(s);
  const streamReplicas = s.int('GATESYNC_STREAM_REPLICAS', { default: 1, min: 1, max: 5 });
  const agentOfflineAfterMs = duration(s, 'GATESYNC_AGENT_OFFLINE_AFTER', '15s');
  if (agentOfflineAfterMs < HEARTBEAT_INTERVAL_MS + 1_000) {
    s.problem(
      'GATESYNC_AGENT_OFFLINE_AFTER',
      `must be at least ${(HEARTBEAT_INTERVAL_MS + 1_000) / 1000}s: agents send a heartbeat every ${HEARTBEAT_INTERVAL_MS / 1000}s`,
    );
  }
  s.finish();
  return {
    natsUrls: natsUrl === undefined ? [] : natsUrl.split(','),
    natsCredsFile,
    natsUser,
    natsPass,
    natsToken,
    host,
    port,
    adminKey,
    // finish() has thrown if the key is missing and allowMissingKey is false.
    signingKey: signingKey as SigningKey,
    extraPublicKeys,
    dataDir,
    batchBodyLimit,
    checkinRetentionDays,
    webhooks,
    streamReplicas,
    agentOfflineAfterMs,
    describe: s.describe(),
    unknownSettings: s.unknownNames(OTHER_KNOWN_SETTINGS),
  };
}
