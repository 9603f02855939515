/**
 * Shared helpers for the daemons' config modules.
 *
 * Settings come from environment variables, optionally underlaid by a JSON file (GATESYNC_CONFIG, or
 * --config) whose keys are the same variable names; the environment wins. A daemon reads everything once,
 * collects every problem, and fails with one message naming each bad setting.
 */
import { readFileSync } from 'node:fs';
import { GatesyncError } from './errors.ts';

export type SettingsSource = Record<string, string | undefined>;

/** Settings read outside the daemons' config modules (logger, CLI, embedded NATS, the other daemon). */
export const OTHER_KNOWN_SETTINGS: readonly string[] = [
  'GATESYNC_CONFIG',
  'GATESYNC_LOG_LEVEL',
  'GATESYNC_NATS_SERVER_BIN',
  'GATESYNC_TEST_LOG',
  // Shared by hub and agent on one machine:
  'GATESYNC_NATS_URL',
  'GATESYNC_NATS_CREDS',
  'GATESYNC_NATS_USER',
  'GATESYNC_NATS_PASS',
  'GATESYNC_NATS_TOKEN',
];

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** The log level from the settings, or a config error naming GATESYNC_LOG_LEVEL. */
export function logLevel(source: SettingsSource): string {
  const v = source.GATESYNC_LOG_LEVEL?.trim() || 'info';
  if (!LOG_LEVELS.includes(v)) {
    throw new GatesyncError(
      'config_invalid',
      `invalid configuration: GATESYNC_LOG_LEVEL: must be one of ${LOG_LEVELS.join(', ')}, got "${v}"`,
    );
  }
  return v;
}

export function loadSettingsSource(env: NodeJS.ProcessEnv, configFile?: string): SettingsSource {
  const file = configFile ?? env.GATESYNC_CONFIG;
  const merged: SettingsSource = {};
  if (file !== undefined && file !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err: unknown) {
      throw new GatesyncError('config_invalid', `GATESYNC_CONFIG: cannot read JSON config file ${file}`, {
        cause: err,
      });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new GatesyncError('config_invalid', `GATESYNC_CONFIG: ${file} must hold a JSON object`);
    }
    for (const [k, v] of Object.entries(parsed)) {
      // null means "not set", as an absent key does.
      if (v === null || v === undefined) continue;
      merged[k] = typeof v === 'string' ? v : JSON.stringify(v);
    }
  }
  for (const [k, v] of Object.entries(env)) {
    // An empty variable is "not set": it must not hide the file's value.
    if (k.startsWith('GATESYNC_') && v !== undefined && v.trim() !== '') merged[k] = v;
  }
  return merged;
}

interface Common {
  /** Never log the value. */
  secret?: boolean;
}

export class Settings {
  private readonly problems: string[] = [];
  private readonly resolved = new Map<string, { value: string; secret: boolean }>();

  constructor(private readonly source: SettingsSource) {}

  private readonly asked = new Set<string>();

  private raw(name: string): string | undefined {
    this.asked.add(name);
    const v = this.source[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  }

  private note(name: string, value: string | undefined, secret = false): void {
    if (value !== undefined) this.resolved.set(name, { value, secret });
  }

  problem(name: string, message: string): void {
    this.problems.push(`${name}: ${message}`);
  }

  optionalString(name: string, opts: Common & { pattern?: RegExp; hint?: string } = {}): string | undefined {
    const v = this.raw(name);
    if (v !== undefined && opts.pattern !== undefined && !opts.pattern.test(v)) {
      this.problem(name, opts.hint ?? `does not match ${opts.pattern.source}`);
      return undefined;
    }
    this.note(name, v, opts.secret);
    return v;
  }

  string(name: string, opts: Common & { default: string; pattern?: RegExp; hint?: string }): string {
    return this.optionalString(name, opts) ?? this.noteDefault(name, opts.default, opts.secret);
  }

  requiredString(name: string, opts: Common & { pattern?: RegExp; hint?: string } = {}): string {
    const v = this.optionalString(name, opts);
    if (v === undefined && this.raw(name) === undefined) {
      this.problem(name, `is required${opts.hint !== undefined ? ` (${opts.hint})` : ''}`);
    }
    return v ?? '';
  }

  int(name: string, opts: { default: number; min?: number; max?: number }): number {
    const v = this.raw(name);
    if (v === undefined) return Number(this.noteDefault(name, String(opts.default)));
    const n = Number(v);
    if (!Number.isSafeInteger(n)) {
      this.problem(name, `must be an integer, got "${v}"`);
      return opts.default;
    }
    if ((opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max)) {
      this.problem(name, `must be between ${opts.min ?? '-inf'} and ${opts.max ?? 'inf'}, got ${n}`);
      return opts.default;
    }
    this.note(name, v);
    return n;
  }

  bool(name: string, def: boolean): boolean {
    const v = this.raw(name);
    if (v === undefined) return this.noteDefault(name, String(def)) === 'true';
    if (!['true', 'false', '1', '0'].includes(v)) {
      this.problem(name, `must be true or false, got "${v}"`);
      return def;
    }
    this.note(name, v);
    return v === 'true' || v === '1';
  }

  /** Records an already-parsed value (for settings parsed by a custom function). */
  custom<T>(name: string, parse: (raw: string | undefined) => T, opts: Common = {}): T | undefined {
    const v = this.raw(name);
    try {
      const parsed = parse(v);
      this.note(name, v, opts.secret);
      return parsed;
    } catch (err: unknown) {
      this.problem(name, err instanceof Error ? err.message : String(err));
      return undefined;
    }
  }

  private noteDefault(name: string, value: string, secret = false): string {
    this.resolved.set(name, { value: `${value} (default)`, secret });
    return value;
  }

  /** Throws one `config_invalid` error listing every problem. */
  finish(): void {
    if (this.problems.length > 0) {
      throw new GatesyncError('config_invalid', `invalid configuration: ${this.problems.join('; ')}`, {
        details: { problems: [...this.problems] },
      });
    }
  }

  /** GATESYNC_* names in the source that no setting read: most likely misspelled. */
  unknownNames(alsoKnown: readonly string[] = []): string[] {
    return Object.keys(this.source).filter(
      (k) => k.startsWith('GATESYNC_') && !this.asked.has(k) && !alsoKnown.includes(k),
    );
  }

  /** The resolved settings with secrets masked, for the start-up log line. */
  describe(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, { value, secret }] of this.resolved) out[k] = secret ? maskSecret(value) : value;
    return out;
  }
}

export function maskSecret(value: string): string {
  return `[secret, ${value.length} chars]`;
}
