import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type AttemptClass,
  type AttemptOutcome,
  classifyAttempt,
  DEFAULT_RETRY_SCHEDULE_MS,
  type NextDelayInput,
  nextDelay,
  parseRetryAfter,
  parseRetrySchedule,
  planNext,
} from '../../hub/webhooks/retry-policy.ts';
import { GatesyncError } from '../../shared/errors.ts';

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const NOW = Date.UTC(2026, 4, 1, 12, 0, 0);
const status = (s: number, retryAfter?: string): AttemptOutcome => ({
  kind: 'response',
  status: s,
  retryAfter,
});
const network = (code: string): AttemptOutcome => ({ kind: 'network', code });
const fixed = (r: number) => () => r;

function input(
  attempt: number,
  outcome: AttemptOutcome,
  r = 0.5,
  schedule = DEFAULT_RETRY_SCHEDULE_MS,
): NextDelayInput {
  return { attempt, schedule, outcome, random: fixed(r), now: NOW };
}

test('the default schedule is 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h', () => {
  assert.deepEqual(DEFAULT_RETRY_SCHEDULE_MS, [5 * S, 5 * M, 30 * M, 2 * H, 5 * H, 10 * H, 10 * H]);
  assert.throws(() => (DEFAULT_RETRY_SCHEDULE_MS as number[]).push(1));
});

test('only 2xx succeeds, 410 disables, everything else is retried', () => {
  const cases: Array<[AttemptOutcome, AttemptClass]> = [
    [status(200), 'success'],
    [status(201), 'success'],
    [status(202), 'success'],
    [status(204), 'success'],
    [status(299), 'success'],
    [status(100), 'retry'],
    [status(199), 'retry'],
    [status(300), 'retry'],
    [status(301), 'retry'],
    [status(302), 'retry'],
    [status(304), 'retry'],
    [status(307), 'retry'],
    [status(308), 'retry'],
    [status(400), 'retry'],
    [status(401), 'retry'],
    [status(403), 'retry'],
    [status(404), 'retry'],
    [status(408), 'retry'],
    [status(409), 'retry'],
    [status(410), 'disable'],
    [status(413), 'retry'],
    [status(422), 'retry'],
    [status(429), 'retry'],
    [status(500), 'retry'],
    [status(502), 'retry'],
    [status(503), 'retry'],
    [status(504), 'retry'],
    [status(599), 'retry'],
    [network('ENOTFOUND'), 'retry'],
    [network('EAI_AGAIN'), 'retry'],
    [network('ECONNREFUSED'), 'retry'],
    [network('ECONNRESET'), 'retry'],
    [network('EPIPE'), 'retry'],
    [network('ETIMEDOUT'), 'retry'],
    [network('UND_ERR_CONNECT_TIMEOUT'), 'retry'],
    [network('UND_ERR_HEADERS_TIMEOUT'), 'retry'],
    [network('UND_ERR_BODY_TIMEOUT'), 'retry'],
    [network('UND_ERR_SOCKET'), 'retry'],
    [network('CERT_HAS_EXPIRED'), 'retry'],
    [network('ERR_TLS_CERT_ALTNAME_INVALID'), 'retry'],
    [network('EGATESYNC_SSRF'), 'retry'],
  ];
  for (const [outcome, expected] of cases)
    assert.equal(classifyAttempt(outcome), expected, JSON.stringify(outcome));
});

test('each failed attempt waits its scheduled delay, and the eighth is the last', () => {
  const cases: Array<[attempt: number, delay: number | null]> = [
    [1, 5 * S],
    [2, 5 * M],
    [3, 30 * M],
    [4, 2 * H],
    [5, 5 * H],
    [6, 10 * H],
    [7, 10 * H],
    [8, null],
    [9, null],
  ];
  for (const [attempt, delay] of cases) {
    assert.equal(nextDelay(input(attempt, status(500))), delay, `after attempt ${attempt}`);
    assert.equal(nextDelay(input(attempt, network('ECONNRESET'))), delay, `after attempt ${attempt}`);
  }
  assert.equal(nextDelay(input(2, status(500), 0.5, [1 * S, 2 * S])), 2 * S);
  assert.equal(nextDelay(input(3, status(500), 0.5, [1 * S, 2 * S])), null);
  assert.equal(nextDelay(input(1, status(500), 0.5, [])), null);
});

test('success and 410 have no next attempt', () => {
  assert.equal(nextDelay(input(1, status(200))), null);
  assert.equal(nextDelay(input(1, status(410))), null);
});

test('jitter is ±10 % of the scheduled delay', () => {
  const cases: Array<[r: number, delay: number]> = [
    [0, 4500],
    [0.25, 4750],
    [0.5, 5000],
    [0.75, 5250],
    [0.999999, 5500],
    [1, 5500], // a random() out of range is clamped
    [-3, 4500],
  ];
  for (const [r, delay] of cases) assert.equal(nextDelay(input(1, status(500), r)), delay, `random ${r}`);
  for (let attempt = 1; attempt <= DEFAULT_RETRY_SCHEDULE_MS.length; attempt++) {
    const scheduled = DEFAULT_RETRY_SCHEDULE_MS[attempt - 1]!;
    for (let r = 0; r < 1; r += 0.05) {
      const delay = nextDelay(input(attempt, network('ECONNREFUSED'), r))!;
      assert.ok(delay >= scheduled * 0.9 && delay <= scheduled * 1.1, `${attempt} ${r}: ${delay}`);
    }
  }
});

test('a 3xx is a failure like any other: retried on schedule, never followed', () => {
  for (const s of [301, 302, 303, 307, 308]) {
    assert.deepEqual(planNext(input(1, status(s))), { action: 'retry', delayMs: 5 * S, dueAt: NOW + 5 * S });
  }
});

test('429, 408, 502, 503, 504 and timeouts wait at least a minute', () => {
  const cases: Array<[outcome: AttemptOutcome, attempt: number, r: number, delay: number]> = [
    [status(429), 1, 0, 60 * S],
    [status(429), 1, 0.5, 63 * S],
    [status(429), 1, 0.999999, 66 * S],
    [status(408), 1, 0, 60 * S],
    [status(502), 1, 0, 60 * S],
    [status(503), 1, 0, 60 * S],
    [status(504), 1, 0, 60 * S],
    [network('ETIMEDOUT'), 1, 0, 60 * S],
    [network('UND_ERR_CONNECT_TIMEOUT'), 1, 0, 60 * S],
    [network('UND_ERR_HEADERS_TIMEOUT'), 1, 0, 60 * S],
    [network('UND_ERR_BODY_TIMEOUT'), 1, 0, 60 * S],
    // Above a minute, the schedule rules.
    [status(429), 2, 0.5, 5 * M],
    [network('ETIMEDOUT'), 3, 0.5, 30 * M],
    // Not throttling: the plain schedule.
    [status(500), 1, 0, 4500],
    [network('ECONNREFUSED'), 1, 0, 4500],
    [network('ECONNRESET'), 1, 0, 4500],
  ];
  for (const [outcome, attempt, r, delay] of cases) {
    assert.equal(nextDelay(input(attempt, outcome, r)), delay, `${JSON.stringify(outcome)} after ${attempt}`);
  }
});

test('Retry-After is honoured within [scheduled, 2 x scheduled], jittered upwards only', () => {
  const inSevenMinutes = new Date(NOW + 7 * M).toUTCString();
  const anHourAgo = new Date(NOW - H).toUTCString();
  const cases: Array<[outcome: AttemptOutcome, attempt: number, r: number, delay: number]> = [
    [status(503, '400'), 2, 0, 400 * S], // inside [5 min, 10 min]: as asked
    [status(503, '400'), 2, 0.5, 420 * S], // +5 % jitter
    [status(503, '590'), 2, 0.999999, 10 * M], // jitter cannot pass 2 x scheduled
    [status(503, '120'), 2, 0, 5 * M], // sooner than the schedule: the schedule
    [status(503, '0'), 2, 0.5, 315 * S], // scheduled, +5 %
    [status(500, '86400'), 2, 0, 10 * M], // a day: capped at 2 x scheduled
    [status(500, '86400'), 7, 0, 20 * H],
    [status(503, inSevenMinutes), 2, 0, 7 * M], // an HTTP-date
    [status(503, anHourAgo), 2, 0, 5 * M], // a date in the past
    [status(503, 'soon'), 2, 0, 270 * S], // malformed: ignored, plain jitter
    [status(302, '600'), 2, 0, 10 * M], // honoured on any failure
    // The throttle floor applies last and may exceed 2 x scheduled.
    [status(429, '1'), 1, 0, 60 * S],
    [status(429, '30'), 1, 0.5, 63 * S],
    [status(429, '86400'), 1, 0, 60 * S],
    [status(429, '86400'), 3, 0, 60 * M],
  ];
  for (const [outcome, attempt, r, delay] of cases) {
    assert.equal(
      nextDelay(input(attempt, outcome, r)),
      delay,
      `${JSON.stringify(outcome)} after ${attempt}, r=${r}`,
    );
  }
});

test('parseRetryAfter reads delta-seconds and all three HTTP-date forms, and ignores the rest', () => {
  const at = Date.UTC(1994, 10, 6, 8, 49, 0); // 37 s before the RFC's example date
  const cases: Array<[value: string | undefined, ms: number | null]> = [
    ['120', 120 * S],
    ['0', 0],
    [' 5 ', 5 * S],
    ['007', 7 * S],
    ['Sun, 06 Nov 1994 08:49:37 GMT', 37 * S],
    ['Sunday, 06-Nov-94 08:49:37 GMT', 37 * S],
    ['Sun Nov  6 08:49:37 1994', 37 * S],
    ['Sun Nov 16 08:49:37 1994', 10 * 24 * H + 37 * S],
    ['Sat, 05 Nov 1994 08:49:37 GMT', 0], // in the past
    [undefined, null],
    ['', null],
    ['   ', null],
    ['-5', null],
    ['1.5', null],
    ['1e3', null],
    ['soon', null],
    ['Sun, 31 Feb 1994 08:49:37 GMT', null],
    ['Sun, 06 Nov 1994 24:00:00 GMT', null],
    ['Sun, 06 Nov 1994 08:49:37 gmt', null],
    ['Sun, 06 Nov 1994 08:49:37 +0000', null],
    ['1994-11-06T08:49:37Z', null],
    ['Sun, 6 Nov 1994 08:49:37 GMT', null],
  ];
  for (const [value, ms] of cases) assert.equal(parseRetryAfter(value, at), ms, String(value));
});

test('a two-digit RFC 850 year is the most recent one not more than 50 years ahead', () => {
  const now = Date.UTC(2026, 0, 1);
  assert.equal(parseRetryAfter('Thursday, 01-Jan-26 00:00:10 GMT', now), 10 * S);
  assert.equal(parseRetryAfter('Monday, 01-Jan-80 00:00:00 GMT', now), 0); // 1980, not 2080
});

test('planNext turns an outcome into the one action the worker takes', () => {
  assert.deepEqual(planNext(input(3, status(204))), { action: 'delivered' });
  assert.deepEqual(planNext(input(3, status(410))), {
    action: 'disable_endpoint',
    reason: 'the receiver answered 410 Gone',
  });
  assert.deepEqual(planNext(input(3, network('ECONNRESET'))), {
    action: 'retry',
    delayMs: 30 * M,
    dueAt: NOW + 30 * M,
  });
  assert.deepEqual(planNext(input(8, status(503))), {
    action: 'dead_letter',
    reason: 'gave up after 8 attempts; the last failed with HTTP 503',
  });
  assert.deepEqual(planNext(input(1, network('EGATESYNC_SSRF'), 0.5, [])), {
    action: 'dead_letter',
    reason: 'gave up after 1 attempt; the last failed with EGATESYNC_SSRF',
  });
});

test('nextDelay refuses an attempt count or schedule that is a bug', () => {
  for (const attempt of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => nextDelay(input(attempt, status(500))), RangeError, String(attempt));
  }
  assert.throws(() => nextDelay(input(1, status(500), 0.5, [-1])), RangeError);
  assert.throws(() => nextDelay(input(1, status(500), 0.5, [Number.POSITIVE_INFINITY])), RangeError);
});

test('a configured schedule is parsed with units, and every bad entry is named', () => {
  assert.deepEqual(parseRetrySchedule('5s,5m,30m,2h,5h,10h,10h'), DEFAULT_RETRY_SCHEDULE_MS);
  assert.deepEqual(parseRetrySchedule(' 500ms , 1s,1d '), [500, 1000, 24 * H]);
  const cases: Array<[text: string, why: RegExp]> = [
    ['', /"" is not a positive duration/],
    ['5', /"5" is not a positive duration/],
    ['5x', /"5x" is not/],
    ['1.5s', /"1.5s" is not/],
    ['-1s', /"-1s" is not/],
    ['0s', /"0s" is not/],
    ['5s,,5m', /"" is not/],
    ['8d', /"8d" is longer than 7 days/],
    [Array(31).fill('1s').join(','), /at most 30 delays/],
  ];
  for (const [text, why] of cases) {
    assert.throws(
      () => parseRetrySchedule(text),
      (err: unknown) =>
        err instanceof GatesyncError && err.code === 'config_invalid' && why.test(err.message),
      text,
    );
  }
  assert.throws(
    () => parseRetrySchedule('5x,8d'),
    /"5x" is not a positive duration.*; "8d" is longer than 7 days/,
  );
});
