/**
 * What to do after a webhook delivery attempt: done, retry later (and when), disable the endpoint, or
 * dead-letter the message. Pure: the clock and the random source are passed in, so every rule is a row
 * in a table test.
 *
 * Why this file: the rules come from the Standard Webhooks spec, Svix, Convoy, Outpost and Stripe, and they
 * are easy to get subtly wrong in the middle of I/O code (following a redirect, treating a 404 as final,
 * hammering a 429). Keeping them here lets the delivery worker stay a loop that sends and records.
 *
 * The rules:
 * - Only 2xx is success. 410 Gone disables the endpoint at once (the receiver asked us to stop). Every
 *   other status, 3xx included (redirects are never followed), and every network error is retried.
 * - A connect-time SSRF refusal (`EGATESYNC_SSRF`) is retried like any network error: the refusal is a
 *   property of the DNS answer at that moment, not of the message (split-horizon DNS during an outage, a
 *   record being fixed), every retry is checked again, so retrying can never reach a refused address,
 *   and the attempt log says why each one failed. An endpoint that keeps resolving inward ends in the dead
 *   letter like any dead endpoint, and the circuit breaker stops it from costing anything meanwhile.
 * - The schedule (default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about 28 hours) gives
 *   the delay after attempt n as schedule[n - 1]; after attempt schedule.length + 1 the message is
 *   dead-lettered.
 * - Jitter is ±10 % of the scheduled delay, not "full jitter" (uniform in [0, delay]): the schedule is
 *   part of our contract with receivers (they plan maintenance around "we retry for about a day"), and full
 *   jitter would let a 10-hour wait become 10 seconds and undo the backoff. ±10 % still spreads a herd of
 *   messages that failed together (±30 s around 5 min, ±12 min around 2 h).
 * - `Retry-After` (delta-seconds or any of the three HTTP-date forms) is honoured but clamped into
 *   [scheduled, 2 × scheduled]: a receiver cannot make us retry sooner than the schedule, nor park a message
 *   for a week. Jitter there is upwards only (0 to +10 %, then clamped), so many messages told "retry at
 *   12:00" do not all arrive at 12:00.
 * - Throttling answers wait at least a minute (plus 0 to 10 % jitter), whatever the schedule or
 *   Retry-After says: 429, the spec's 502 and 504, 503 (overloaded or in maintenance), 408, and every
 *   timeout. The floor applies last, so it can exceed 2 × scheduled.
 */
import { GatesyncError } from '../../shared/errors.ts';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

/** Delays after each failed attempt (milliseconds). */
export const DEFAULT_RETRY_SCHEDULE_MS: readonly number[] = Object.freeze([
  5 * SECOND,
  5 * MINUTE,
  30 * MINUTE,
  2 * HOUR,
  5 * HOUR,
  10 * HOUR,
  10 * HOUR,
]);

/** Least wait after a throttling answer or a timeout (milliseconds). */
export const THROTTLE_FLOOR_MS = MINUTE;
/** Jitter as a fraction of the delay. */
export const JITTER_FRACTION = 0.1;

export type AttemptOutcome =
  | { kind: 'response'; status: number; retryAfter?: string | undefined }
  | { kind: 'network'; code: string };

export type AttemptClass = 'success' | 'retry' | 'disable';

/**
 * Network error codes that mean "the receiver was too slow". The delivery worker reports its own overall
 * deadline (an aborted request) as `ETIMEDOUT`.
 */
export const TIMEOUT_CODES: ReadonlySet<string> = new Set([
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

/** Statuses that ask the sender to slow down. */
export const THROTTLE_STATUSES: ReadonlySet<number> = new Set([408, 429, 502, 503, 504]);

export function classifyAttempt(outcome: AttemptOutcome): AttemptClass {
  switch (outcome.kind) {
    case 'response':
      if (outcome.status >= 200 && outcome.status <= 299) return 'success';
      if (outcome.status === 410) return 'disable';
      return 'retry';
    case 'network':
      return 'retry';
    default: {
      const never: never = outcome;
      throw new Error(`unknown outcome ${JSON.stringify(never)}`);
    }
  }
}

/** True when the next attempt must wait at least `THROTTLE_FLOOR_MS`. */
export function isThrottled(outcome: AttemptOutcome): boolean {
  return outcome.kind === 'response'
    ? THROTTLE_STATUSES.has(outcome.status)
    : TIMEOUT_CODES.has(outcome.code);
}

/** A short text for logs and dead-letter reasons: `HTTP 503` or `ECONNREFUSED`. */
export function describeOutcome(outcome: AttemptOutcome): string {
  return outcome.kind === 'response' ? `HTTP ${outcome.status}` : outcome.code;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = MONTHS.join('|');
const IMF_FIXDATE = new RegExp(
  `^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d{2}) (${MONTH}) (\\d{4}) (\\d{2}):(\\d{2}):(\\d{2}) GMT$`,
);
const RFC850_DATE = new RegExp(
  `^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d{2})-(${MONTH})-(\\d{2}) (\\d{2}):(\\d{2}):(\\d{2}) GMT$`,
);
const ASCTIME_DATE = new RegExp(
  `^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (${MONTH}) ( \\d|\\d{2}) (\\d{2}):(\\d{2}):(\\d{2}) (\\d{4})$`,
);

function utc(year: number, month: string, day: number, h: number, m: number, s: number): number | null {
  const mon = MONTHS.indexOf(month);
  const t = Date.UTC(year, mon, day, h, m, s);
  const d = new Date(t);
  // Date.UTC rolls 31 Feb over to March and 24:00 to the next day; refuse instead.
  if (d.getUTCFullYear() !== year || d.getUTCMonth() !== mon || d.getUTCDate() !== day) return null;
  if (d.getUTCHours() !== h || d.getUTCMinutes() !== m || d.getUTCSeconds() !== s) return null;
  return t;
}

/** RFC 9110: an HTTP-date in any of its three forms, as milliseconds since the epoch, or null. */
function parseHttpDate(value: string, now: number): number | null {
  let m = IMF_FIXDATE.exec(value);
  if (m !== null) return utc(Number(m[3]), m[2]!, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]));
  m = RFC850_DATE.exec(value);
  if (m !== null) {
    // Two-digit year: the most recent year with those digits that is not more than 50 years ahead.
    const thisYear = new Date(now).getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + Number(m[3]);
    if (year > thisYear + 50) year -= 100;
    return utc(year, m[2]!, Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]));
  }
  m = ASCTIME_DATE.exec(value);
  if (m !== null) {
    return utc(Number(m[6]), m[1]!, Number(m[2]!.trim()), Number(m[3]), Number(m[4]), Number(m[5]));
  }
  return null;
}

/**
 * A `Retry-After` value as milliseconds to wait from `now` (never negative; a date in the past is 0), or
 * null when absent or malformed (then it is ignored, as RFC 9110 allows).
 */
export function parseRetryAfter(value: string | undefined, now: number): number | null {
  if (value === undefined) return null;
  const v = value.trim();
  if (v === '') return null;
  if (/^\d+$/.test(v)) {
    const seconds = Number(v);
    return Number.isFinite(seconds) ? seconds * SECOND : null;
  }
  const at = parseHttpDate(v, now);
  return at === null ? null : Math.max(0, at - now);
}

export interface NextDelayInput {
  /** How many attempts have been made, this one included (1 after the first attempt). */
  attempt: number;
  /** Delays after each failed attempt (milliseconds); see `DEFAULT_RETRY_SCHEDULE_MS`. */
  schedule: readonly number[];
  outcome: AttemptOutcome;
  /** Uniform in [0, 1), like Math.random. */
  random: () => number;
  /** Milliseconds since the epoch, for an HTTP-date Retry-After. */
  now: number;
  /** Least wait after a throttling answer or a timeout; default `THROTTLE_FLOOR_MS` (tests shorten it). */
  throttleFloorMs?: number;
}

/**
 * Milliseconds to wait before the next attempt, or null when there is none: the schedule is exhausted
 * (dead-letter the message), or the outcome is not retried (success, or 410: see `classifyAttempt`).
 */
export function nextDelay({
  attempt,
  schedule,
  outcome,
  random,
  now,
  throttleFloorMs = THROTTLE_FLOOR_MS,
}: NextDelayInput): number | null {
  if (!Number.isInteger(attempt) || attempt < 1) {
    throw new RangeError(`attempt must be a whole number of attempts made, at least 1; got ${attempt}`);
  }
  if (classifyAttempt(outcome) !== 'retry') return null;
  if (attempt > schedule.length) return null;
  const scheduled = schedule[attempt - 1]!;
  if (!Number.isFinite(scheduled) || scheduled < 0) {
    throw new RangeError(`schedule[${attempt - 1}] must be a non-negative number of milliseconds`);
  }
  const r = Math.min(Math.max(random(), 0), 1);

  const retryAfter = outcome.kind === 'response' ? parseRetryAfter(outcome.retryAfter, now) : null;
  let delay: number;
  if (retryAfter !== null) {
    const wanted = Math.max(retryAfter, scheduled) * (1 + JITTER_FRACTION * r);
    delay = Math.min(wanted, 2 * scheduled);
  } else {
    delay = scheduled * (1 - JITTER_FRACTION + 2 * JITTER_FRACTION * r);
  }
  if (isThrottled(outcome)) delay = Math.max(delay, throttleFloorMs * (1 + JITTER_FRACTION * r));
  return Math.round(delay);
}

export type NextStep =
  | { action: 'delivered' }
  | { action: 'disable_endpoint'; reason: string }
  | { action: 'retry'; delayMs: number; dueAt: number }
  | { action: 'dead_letter'; reason: string };

/** `classifyAttempt` and `nextDelay` together: the one decision the delivery worker acts on. */
export function planNext(input: NextDelayInput): NextStep {
  const cls = classifyAttempt(input.outcome);
  switch (cls) {
    case 'success':
      return { action: 'delivered' };
    case 'disable':
      return { action: 'disable_endpoint', reason: 'the receiver answered 410 Gone' };
    case 'retry': {
      const delayMs = nextDelay(input);
      if (delayMs === null) {
        const attempts = input.attempt === 1 ? '1 attempt' : `${input.attempt} attempts`;
        return {
          action: 'dead_letter',
          reason: `gave up after ${attempts}; the last failed with ${describeOutcome(input.outcome)}`,
        };
      }
      return { action: 'retry', delayMs, dueAt: input.now + delayMs };
    }
    default: {
      const never: never = cls;
      throw new Error(`unknown attempt class ${String(never)}`);
    }
  }
}

const UNIT_MS: Record<string, number> = { ms: 1, s: SECOND, m: MINUTE, h: HOUR, d: 24 * HOUR };
/** Bounds for a configured schedule: a typo must not keep a message for a year. */
const MAX_SCHEDULE_ENTRIES = 30;
const MAX_SCHEDULE_DELAY_MS = 7 * 24 * HOUR;

/**
 * Parses a schedule from config: `5s,5m,30m,2h,5h,10h,10h` (units ms, s, m, h, d). Throws
 * `config_invalid` naming every bad entry.
 */
export function parseRetrySchedule(text: string): number[] {
  const entries = text.split(',').map((e) => e.trim());
  const problems: string[] = [];
  const out: number[] = [];
  if (entries.length > MAX_SCHEDULE_ENTRIES) problems.push(`at most ${MAX_SCHEDULE_ENTRIES} delays`);
  for (const entry of entries) {
    const m = /^(\d+)(ms|s|m|h|d)$/.exec(entry);
    const ms = m === null ? Number.NaN : Number(m[1]) * UNIT_MS[m[2]!]!;
    if (!(ms > 0)) {
      problems.push(`"${entry}" is not a positive duration like 500ms, 5s, 5m, 2h or 1d`);
    } else if (ms > MAX_SCHEDULE_DELAY_MS) {
      problems.push(`"${entry}" is longer than 7 days`);
    } else {
      out.push(ms);
    }
  }
  if (problems.length > 0) {
    throw new GatesyncError('config_invalid', `the retry schedule is invalid: ${problems.join('; ')}`);
  }
  return out;
}
