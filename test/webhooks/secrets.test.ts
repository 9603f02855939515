import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import {
  activeSecrets,
  DEFAULT_ROTATION_GRACE_MS,
  generateSecret,
  newSecretRing,
  parseSecret,
  rotateSecret,
  type SecretRing,
  signPayload,
  webhookHeaders,
} from '../../hub/webhooks/secrets.ts';
import { GatesyncError } from '../../shared/errors.ts';

const HOUR = 3_600_000;
const nowSeconds = () => Math.floor(Date.now() / 1000);
const secretOf = (bytes: number, fill = 7) => `whsec_${Buffer.alloc(bytes, fill).toString('base64')}`;

function validationError(pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof GatesyncError, `expected a GatesyncError, got ${String(err)}`);
    assert.equal(err.code, 'validation_failed');
    assert.match(err.message, pattern);
    return true;
  };
}

test('generated secrets are whsec_ + base64 of the asked number of random bytes', () => {
  for (const bytes of [undefined, 24, 32, 48, 64]) {
    const secret = generateSecret(bytes);
    assert.match(secret, /^whsec_[A-Za-z0-9+/]+=*$/);
    assert.equal(parseSecret(secret).length, bytes ?? 32, String(bytes));
  }
  assert.notEqual(generateSecret(), generateSecret());
});

test('a secret outside 24 to 64 bytes is never generated', () => {
  for (const bytes of [0, 16, 23, 65, 128, 32.5, Number.NaN]) {
    assert.throws(() => generateSecret(bytes), validationError(/24 to 64 random bytes/), String(bytes));
  }
});

test('parseSecret refuses every malformed secret and says why without repeating it', () => {
  const cases: Array<[label: string, secret: string, why: RegExp]> = [
    ['no prefix', Buffer.alloc(32, 1).toString('base64'), /must start with "whsec_"/],
    ['wrong prefix', `whsk_${Buffer.alloc(32, 1).toString('base64')}`, /must start with "whsec_"/],
    ['nothing after the prefix', 'whsec_', /empty/],
    ['not base64', `whsec_${'!'.repeat(44)}`, /standard base64/],
    ['url-safe alphabet', `whsec_${'-_'.repeat(22)}`, /standard base64/],
    ['missing padding', secretOf(32).replace(/=+$/, ''), /standard base64/],
    ['whitespace inside', `${secretOf(32).slice(0, 20)} ${secretOf(32).slice(20)}`, /standard base64/],
    [
      'stray bits in the last character',
      `whsec_${Buffer.alloc(32, 7).toString('base64').replace(/c=$/, 'd=')}`,
      /canonical/,
    ],
    ['16 bytes', secretOf(16), /24 to 64 bytes, got 16/],
    ['23 bytes', secretOf(23), /24 to 64 bytes, got 23/],
    ['65 bytes', secretOf(65), /24 to 64 bytes, got 65/],
  ];
  for (const [label, secret, why] of cases) {
    assert.throws(
      () => parseSecret(secret),
      (err: unknown) => {
        validationError(why)(err);
        const material = secret.slice(6, 20);
        if (material.length > 0) {
          assert.ok(!(err as Error).message.includes(material), `${label}: message leaks the secret`);
        }
        return true;
      },
      label,
    );
  }
  for (const bytes of [24, 32, 64]) assert.equal(parseSecret(secretOf(bytes)).length, bytes);
});

test('the signature matches the Standard Webhooks reference vector', () => {
  // The known-answer test of the reference libraries (svix / standard-webhooks).
  const signature = signPayload({
    id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
    timestamp: 1614265330,
    body: '{"test": 2432232314}',
    secrets: ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'],
  });
  assert.equal(signature, 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  const reference = new Webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw').sign(
    'msg_p5jXN8AQM9LWM0D4loKWxJek',
    new Date(1614265330 * 1000),
    '{"test": 2432232314}',
  );
  assert.equal(signature, reference);
});

test('every body a check-in can carry verifies with the standardwebhooks library', () => {
  const secret = generateSecret();
  const bodies = [
    '{"type":"checkin.created","data":{"id":"c1"}}',
    '{"holder":"Zoë Müller","note":"🎟️ gate north"}',
    '',
    '{"a":"dots . in . the . body","b":"newline\\n and \r\n real ones"}\n',
    JSON.stringify({ big: 'x'.repeat(100_000) }),
  ];
  for (const body of bodies) {
    const headers = webhookHeaders({ id: 'msg_01HXYZ', timestamp: nowSeconds(), body, secrets: [secret] });
    const parsed = new Webhook(secret).verify(body, { ...headers }, { jsonParse: false });
    assert.equal(parsed, undefined);
    // And by hand, as the spec defines it.
    const expected = createHmac('sha256', parseSecret(secret))
      .update(`msg_01HXYZ.${headers['webhook-timestamp']}.${body}`)
      .digest('base64');
    assert.equal(headers['webhook-signature'], `v1,${expected}`);
  }
});

test('a tampered body, id or timestamp fails verification', () => {
  const secret = generateSecret();
  const body = '{"n":1}';
  const headers = webhookHeaders({ id: 'msg_a', timestamp: nowSeconds(), body, secrets: [secret] });
  const wh = new Webhook(secret);
  assert.throws(() => wh.verify('{"n":2}', { ...headers }));
  assert.throws(() => wh.verify(body, { ...headers, 'webhook-id': 'msg_b' }));
  assert.throws(() =>
    wh.verify(body, { ...headers, 'webhook-timestamp': String(Number(headers['webhook-timestamp']) - 1) }),
  );
  assert.throws(() => new Webhook(generateSecret()).verify(body, { ...headers }));
});

test('during a rotation both secrets sign, and a receiver holding either one verifies', () => {
  const oldSecret = generateSecret();
  const newSecret = generateSecret(48);
  const body = '{"type":"checkin.created"}';
  const headers = webhookHeaders({
    id: 'msg_rot',
    timestamp: nowSeconds(),
    body,
    secrets: [newSecret, oldSecret],
  });
  const parts = headers['webhook-signature'].split(' ');
  assert.equal(parts.length, 2);
  for (const part of parts) assert.match(part, /^v1,[A-Za-z0-9+/]{43}=$/);
  for (const secret of [oldSecret, newSecret]) {
    assert.equal(new Webhook(secret).verify(body, { ...headers }, { jsonParse: false }), undefined);
  }
  assert.throws(() => new Webhook(generateSecret()).verify(body, { ...headers }));
});

test('a secret listed twice signs once', () => {
  const secret = generateSecret();
  const header = signPayload({ id: 'm', timestamp: 1, body: '', secrets: [secret, secret] });
  assert.equal(header.split(' ').length, 1);
});

test('ids, timestamps and secrets that would sign ambiguous or unverifiable content are refused', () => {
  const ok = { id: 'msg_1', timestamp: 1_700_000_000, body: '{}', secrets: [generateSecret()] };
  const cases: Array<[label: string, input: typeof ok, why: RegExp]> = [
    ['id with a dot', { ...ok, id: 'msg.1' }, /webhook-id must match/],
    ['empty id', { ...ok, id: '' }, /webhook-id must match/],
    ['id with a space', { ...ok, id: 'msg 1' }, /webhook-id must match/],
    ['id too long', { ...ok, id: 'm'.repeat(129) }, /webhook-id must match/],
    ['milliseconds', { ...ok, timestamp: 1_700_000_000_000 }, /milliseconds/],
    ['fraction of a second', { ...ok, timestamp: 1_700_000_000.5 }, /whole number of seconds/],
    ['negative', { ...ok, timestamp: -1 }, /whole number of seconds/],
    ['NaN', { ...ok, timestamp: Number.NaN }, /whole number of seconds/],
    ['no secret', { ...ok, secrets: [] }, /at least one webhook secret/],
    ['a bad secret', { ...ok, secrets: ['whsec_short'] }, /standard base64|24 to 64/],
  ];
  for (const [label, input, why] of cases) {
    assert.throws(() => signPayload(input), validationError(why), label);
  }
});

test('activeSecrets: the current secret first, then retired ones until exactly their expiry', () => {
  const [a, b, c] = [secretOf(32, 1), secretOf(32, 2), secretOf(32, 3)];
  const ring: SecretRing = {
    current: a,
    previous: [
      { secret: b, expiresAt: 1000 },
      { secret: c, expiresAt: 2000 },
    ],
  };
  const cases: Array<[now: number, expected: string[]]> = [
    [0, [a, c, b]],
    [999, [a, c, b]],
    [1000, [a, c]],
    [1999, [a, c]],
    [2000, [a]],
    [10_000, [a]],
  ];
  for (const [now, expected] of cases) assert.deepEqual(activeSecrets(ring, now), expected, `at ${now}`);
  // A retired copy of the current secret is not signed twice.
  assert.deepEqual(activeSecrets({ current: a, previous: [{ secret: a, expiresAt: 5000 }] }, 0), [a]);
});

test('rotation keeps the old secret signing for 24 hours by default, and for the grace asked', () => {
  const t0 = 1_800_000_000_000;
  const ring = newSecretRing();
  const old = ring.current;
  const next = generateSecret();
  const rotated = rotateSecret(ring, t0, { next });
  assert.equal(DEFAULT_ROTATION_GRACE_MS, 24 * HOUR);
  assert.deepEqual(activeSecrets(rotated, t0), [next, old]);
  assert.deepEqual(activeSecrets(rotated, t0 + 24 * HOUR - 1), [next, old]);
  assert.deepEqual(activeSecrets(rotated, t0 + 24 * HOUR), [next]);

  const shortGrace = rotateSecret(ring, t0, { next, graceMs: HOUR });
  assert.deepEqual(activeSecrets(shortGrace, t0 + HOUR - 1), [next, old]);
  assert.deepEqual(activeSecrets(shortGrace, t0 + HOUR), [next]);

  // After a leak: the old secret stops at once.
  assert.deepEqual(activeSecrets(rotateSecret(ring, t0, { next, graceMs: 0 }), t0), [next]);

  // Rotating twice within the grace: all three sign; the expired ones are dropped at the next rotation.
  const third = rotateSecret(rotated, t0 + HOUR);
  assert.equal(activeSecrets(third, t0 + HOUR).length, 3);
  const fourth = rotateSecret(third, t0 + 30 * HOUR);
  assert.equal(fourth.previous.length, 1);
  assert.deepEqual(activeSecrets(fourth, t0 + 30 * HOUR), [fourth.current, third.current]);
});

test('rotation refuses a secret that still signs, a malformed one and a negative grace', () => {
  const ring = newSecretRing();
  const rotated = rotateSecret(ring, 0);
  assert.throws(() => rotateSecret(rotated, 1, { next: ring.current }), validationError(/still signs/));
  assert.throws(() => rotateSecret(rotated, 1, { next: rotated.current }), validationError(/still signs/));
  assert.throws(() => rotateSecret(ring, 0, { next: 'whsec_x' }), validationError(/base64|24 to 64/));
  assert.throws(() => rotateSecret(ring, 0, { graceMs: -1 }), validationError(/grace/));
  assert.throws(() => newSecretRing('nope'), validationError(/whsec_/));
});
