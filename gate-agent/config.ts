/** The gate agent's settings, read once at start-up. Every setting is documented in docs/configuration.md. */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { OTHER_KNOWN_SETTINGS, Settings, type SettingsSource } from '../shared/config.ts';
import { hashToken } from '../shared/http.ts';
import { ID_PATTERN, isValidId } from '../shared/ids.ts';
import { type PublicKeyInfo, parseTrustedKeys } from '../shared/signing.ts';

export interface AgentConfig {
  venue: string;
  agentId: string;
  gate: string;
  natsUrls: string[];
  natsCredsFile: string | undefined;
  natsUser: string | undefined;
  natsPass: string | undefined;
  natsToken: string | undefined;
  trustedKeys: Map<string, PublicKeyInfo>;
  /** sha256(token) -> scanner id. */
  scannerTokens: Map<string, string>;
  host: string;
  port: number;
  /** Serve HTTP from a worker thread (http-front.ts) rather than the main thread. */
  httpThread: boolean;
  dbPath: string;
  reentry: boolean;
  verifyWorkers: number;
  describe: Record<string, string>;
  /** GATESYNC_* names no setting read (misspelled?); logged as a warning at start-up. */
  unknownSettings: string[];
}

/** Parses `scanner-id:token,scanner-id:token` into hashed tokens; tokens are at least 16 characters. */
export function parseScannerTokens(spec: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of spec
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const idx = part.indexOf(':');
    const id = part.slice(0, idx);
    const token = part.slice(idx + 1);
    if (idx < 1 || !isValidId(id)) throw new Error('each entry must be <scanner-id>:<token>');
    if (token.length < 16) throw new Error(`token of scanner ${id} must be at least 16 characters`);
    out.set(hashToken(token), id);
  }
  if (out.size === 0) throw new Error('is required: at least one <scanner-id>:<token>');
  return out;
}

export function loadAgentConfig(source: SettingsSource): AgentConfig {
  const s = new Settings(source);
  const idHint = 'must be 1 to 64 of A-Z a-z 0-9 _ -';
  const venue = s.requiredString('GATESYNC_VENUE', { pattern: ID_PATTERN, hint: idHint });
  const agentId = s.requiredString('GATESYNC_AGENT_ID', { pattern: ID_PATTERN, hint: idHint });
  const gate = s.optionalString('GATESYNC_GATE', { pattern: ID_PATTERN, hint: idHint }) ?? agentId;
  const natsUrl = s.requiredString('GATESYNC_NATS_URL', {
    pattern: /^(nats|tls):\/\/[^\s,]+(,(nats|tls):\/\/[^\s,]+)*$/,
    hint: 'nats://host:port of the hub or the venue leaf node',
  });
  const natsCredsFile = s.optionalString('GATESYNC_NATS_CREDS');
  const natsUser = s.optionalString('GATESYNC_NATS_USER');
  const natsPass = s.optionalString('GATESYNC_NATS_PASS', { secret: true });
  const natsToken = s.optionalString('GATESYNC_NATS_TOKEN', { secret: true });
  const trustedKeys =
    s.custom('GATESYNC_TRUSTED_KEYS', (v) => {
      if (v === undefined)
        throw new Error('is required: kid:base64url[,kid:base64url] (see `gatesync keygen`)');
      return parseTrustedKeys(v);
    }) ?? new Map<string, PublicKeyInfo>();
  const scannerTokens =
    s.custom('GATESYNC_SCANNER_TOKENS', (v) => parseScannerTokens(v ?? ''), { secret: true }) ??
    new Map<string, string>();
  const host = s.string('GATESYNC_AGENT_HOST', { default: '127.0.0.1' });
  const port = s.int('GATESYNC_AGENT_PORT', { default: 8181, min: 0, max: 65535 });
  const dbPath = s.string('GATESYNC_DB_PATH', {
    default: join(process.cwd(), '.data', `agent-${agentId || 'agent'}.db`),
  });
  const reentry = s.bool('GATESYNC_REENTRY', false);
  const httpThread = s.bool('GATESYNC_AGENT_HTTP_THREAD', false);
  const verifyWorkers = s.int('GATESYNC_VERIFY_WORKERS', {
    default: availableParallelism(),
    min: 0,
    max: 64,
  });
  s.finish();
  return {
    venue,
    agentId,
    gate,
    natsUrls: natsUrl.split(','),
    natsCredsFile,
    natsUser,
    natsPass,
    natsToken,
    trustedKeys,
    scannerTokens,
    host,
    port,
    dbPath,
    reentry,
    httpThread,
    verifyWorkers,
    describe: s.describe(),
    unknownSettings: s.unknownNames(OTHER_KNOWN_SETTINGS),
  };
}
