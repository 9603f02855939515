import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { encode } from '../../shared/codec.ts';
import { Settings } from '../../shared/config.ts';
import { ERROR_CODES, GatesyncError, toErrorEnvelope } from '../../shared/errors.ts';
import { decodeTicketEvent, EVENT_SCHEMA_VERSION, type TicketEvent } from '../../shared/events.ts';
import { isValidId, newId } from '../../shared/ids.ts';
import { createLogger, REDACT_PATHS } from '../../shared/logger.ts';
import { parseQrToken, signQrToken, verifyQrToken } from '../../shared/qr-token.ts';
import {
  EVENT_CONTEXT,
  generateSigningKey,
  parseSigningKey,
  parseTrustedKeys,
  signBytes,
  TOKEN_CONTEXT,
  verifySigned,
} from '../../shared/signing.ts';

test('every error code is lower_snake_case with a 4xx/5xx status and a sentence', () => {
  for (const [code, { status, description }] of Object.entries(ERROR_CODES)) {
    assert.match(code, /^[a-z]+(_[a-z]+)*$/, code);
    assert.ok(status >= 400 && status < 600, code);
    assert.match(description, /^[A-Z].*\.$/, code);
  }
});

test('unknown errors never leak their message on the wire', () => {
  const env = toErrorEnvelope(new Error('secret path /etc/x'));
  assert.equal(env.status, 500);
  assert.equal(env.body.error.code, 'internal');
  assert.doesNotMatch(env.body.error.message, /secret/);
  const known = toErrorEnvelope(new GatesyncError('ticket_exists', 'exists', { details: { id: 'a' } }));
  assert.deepEqual(known, {
    status: 409,
    body: { error: { code: 'ticket_exists', message: 'exists', details: { id: 'a' } } },
  });
});

test('ids are subject-safe tokens and generated ids are valid and distinct', () => {
  for (const bad of ['', 'a.b', 'a*', 'a>', 'a b', 'x'.repeat(65), 'é'])
    assert.equal(isValidId(bad), false, bad);
  const ids = new Set(Array.from({ length: 1000 }, () => newId()));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.ok(isValidId(id));
});

test('a signed event verifies only with its key, its bytes and the event context', () => {
  const k1 = parseSigningKey(generateSigningKey('k1'));
  const k2 = generateSigningKey('k2');
  const trusted = parseTrustedKeys(`k1:${k1.publicKey},k2:${k2.public_key}`);
  const body = encode({ hello: 'world' });
  const sig = signBytes(k1, EVENT_CONTEXT, body);
  assert.equal(verifySigned(trusted, 'k1', EVENT_CONTEXT, body, sig), 'ok');
  assert.equal(verifySigned(trusted, 'k2', EVENT_CONTEXT, body, sig), 'bad_signature');
  assert.equal(verifySigned(trusted, 'k9', EVENT_CONTEXT, body, sig), 'unknown_key');
  assert.equal(verifySigned(trusted, 'k1', TOKEN_CONTEXT, body, sig), 'bad_signature');
  const tampered = Buffer.from(body);
  tampered.writeUInt8(tampered.readUInt8(tampered.length - 1) ^ 1, tampered.length - 1);
  assert.equal(verifySigned(trusted, 'k1', EVENT_CONTEXT, tampered, sig), 'bad_signature');
  assert.equal(verifySigned(trusted, 'k1', EVENT_CONTEXT, body, sig.subarray(0, 10)), 'bad_signature');
});

test('a QR token round-trips, and any tampering breaks its signature', () => {
  const k = parseSigningKey(generateSigningKey('k1'));
  const trusted = parseTrustedKeys(`k1:${k.publicKey}`);
  const token = signQrToken(k, {
    venue: 'v1',
    ticket: 'T1',
    valid_from: 1_700_000_000_000,
    valid_until: 1_800_000_000_000,
    gates: ['north'],
  });
  assert.ok(token.length < 220, `token is ${token.length} chars`);
  const parsed = parseQrToken(token);
  assert.deepEqual(parsed.claims, {
    kid: 'k1',
    venue: 'v1',
    ticket: 'T1',
    valid_from: 1_700_000_000_000,
    valid_until: 1_800_000_000_000,
    gates: ['north'],
  });
  assert.equal(verifyQrToken(parsed, trusted), true);
  const dot = token.lastIndexOf('.');
  const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
  for (const i of [6, dot - 2, dot + 3]) {
    let ok: boolean;
    try {
      ok = verifyQrToken(parseQrToken(flip(token, i)), trusted);
    } catch {
      ok = false;
    }
    assert.equal(ok, false, `flip at ${i}`);
  }
  for (const bad of ['GS1.', 'GS1.abc', 'GS1.!!!.xyz', 'XX1.a.b'])
    assert.throws(() => parseQrToken(bad), /QR token/);
});

test('event decoding refuses wrong shapes', () => {
  const good: TicketEvent = {
    v: EVENT_SCHEMA_VERSION,
    type: 'ticket.issued',
    id: 'E1',
    at: 1,
    rev: 1,
    ticket: {
      id: 't',
      venue: 'v',
      holder: 'h',
      tier: 'GA',
      seat: null,
      gates: [],
      valid_from: 1,
      valid_until: 2,
      status: 'valid',
      revoked_reason: null,
      issued_at: 1,
      updated_at: 1,
      qr: 'GS1.x.y',
    },
  };
  assert.deepEqual(decodeTicketEvent(encode(good)), good);
  for (const bad of [
    { ...good, v: 2 },
    { ...good, type: 'x' },
    { ...good, rev: 0 },
    { ...good, ticket: { ...good.ticket, id: 'a.b' } },
    'str',
  ]) {
    assert.throws(
      () => decodeTicketEvent(encode(bad)),
      (e: unknown) => e instanceof GatesyncError && e.code === 'malformed',
    );
  }
  assert.throws(
    () => decodeTicketEvent(Buffer.from([0xc1])),
    (e: unknown) => e instanceof GatesyncError && e.code === 'malformed',
  );
});

test('settings report every problem in one message naming each setting, and mask secrets', () => {
  const s = new Settings({ GATESYNC_PORT: 'abc', GATESYNC_SECRET: 'supersecretvalue123' });
  s.requiredString('GATESYNC_VENUE');
  s.int('GATESYNC_PORT', { default: 1 });
  s.optionalString('GATESYNC_SECRET', { secret: true });
  assert.throws(
    () => s.finish(),
    (e: unknown) => {
      assert.ok(e instanceof GatesyncError);
      assert.match(e.message, /GATESYNC_VENUE: is required/);
      assert.match(e.message, /GATESYNC_PORT: must be an integer/);
      return true;
    },
  );
  assert.doesNotMatch(JSON.stringify(s.describe()), /supersecretvalue123/);
});

test('the logger redacts secrets wherever they sit', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const log = pino({ redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, sink);
  log.info(
    {
      req: { headers: { authorization: 'Bearer abc123secret' } },
      token: 'tok-secret',
      cfg: { password: 'pw-secret', private_key: 'pk-secret' },
    },
    'x',
  );
  assert.equal(lines.length, 1);
  assert.doesNotMatch(lines[0] as string, /abc123secret|tok-secret|pw-secret|pk-secret/);
  assert.ok(createLogger('t', 'silent'));
});
