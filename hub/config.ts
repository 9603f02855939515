/** The hub's settings, read once at start-up. Every setting is documented in docs/configuration.md. */
import { join } from 'node:path';
import { OTHER_KNOWN_SETTINGS, Settings, type SettingsSource } from '../shared/config.ts';
import {
  loadSigningKeyFile,
  type PublicKeyInfo,
  parseTrustedKeys,
  type SigningKey,
} from '../shared/signing.ts';

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
  describe: Record<string, string>;
  /** GATESYNC_* names no setting read (misspelled?); logged as a warning at start-up. */
  unknownSettings: string[];
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
    describe: s.describe(),
    unknownSettings: s.unknownNames(OTHER_KNOWN_SETTINGS),
  };
}
