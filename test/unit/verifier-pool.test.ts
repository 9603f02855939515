import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  OUTCOME_BAD_SIGNATURE,
  OUTCOME_OK,
  OUTCOME_UNKNOWN_KEY,
  VerifierPool,
  VerifyBatch,
} from '../../gate-agent/verifier-pool.ts';
import {
  EVENT_CONTEXT,
  generateSigningKey,
  parseSigningKey,
  parseTrustedKeys,
  signBytes,
  verifySigned,
} from '../../shared/signing.ts';

const trustedFile = generateSigningKey('k1');
const trustedKey = parseSigningKey(trustedFile);
const trusted = parseTrustedKeys(`k1:${trustedFile.public_key}`);
const impostor = parseSigningKey(generateSigningKey('k1'));
const stranger = parseSigningKey(generateSigningKey('k9'));

interface Case {
  name: string;
  kid: string | undefined;
  body: Uint8Array;
  sig: string | undefined;
}

function cases(): Case[] {
  const body = (n: number, size = 400) => new Uint8Array(size).fill(n % 251);
  const sign = (key = trustedKey, b: Uint8Array) => signBytes(key, EVENT_CONTEXT, b).toString('base64');
  const good = body(1);
  const goodSig = sign(trustedKey, good);
  const tampered = body(2);
  const tamperedSig = sign(trustedKey, tampered);
  tampered[10] = (tampered[10] as number) ^ 1;
  const big = body(3, 5000); // larger than a batch reserves per item
  return [
    { name: 'valid', kid: 'k1', body: good, sig: goodSig },
    { name: 'valid, larger than the guess', kid: 'k1', body: big, sig: sign(trustedKey, big) },
    { name: 'tampered body', kid: 'k1', body: tampered, sig: tamperedSig },
    { name: 'wrong key under a trusted kid', kid: 'k1', body: good, sig: sign(impostor, good) },
    { name: 'unknown kid', kid: 'k9', body: good, sig: sign(stranger, good) },
    { name: 'unknown kid, short signature', kid: 'k9', body: good, sig: goodSig.slice(0, 40) },
    { name: 'unknown kid, no signature', kid: 'k9', body: good, sig: undefined },
    { name: 'no kid', kid: undefined, body: good, sig: goodSig },
    { name: 'empty kid', kid: '', body: good, sig: goodSig },
    { name: 'no signature', kid: 'k1', body: good, sig: undefined },
    { name: 'empty signature', kid: 'k1', body: good, sig: '' },
    { name: 'signature of 63 bytes', kid: 'k1', body: good, sig: Buffer.alloc(63, 7).toString('base64') },
    { name: 'signature of 65 bytes', kid: 'k1', body: good, sig: Buffer.alloc(65, 7).toString('base64') },
    {
      name: 'valid signature with trailing bytes',
      kid: 'k1',
      body: good,
      sig: Buffer.concat([Buffer.from(goodSig, 'base64'), Buffer.from([1, 2])]).toString('base64'),
    },
    {
      name: 'signature with a character outside base64',
      kid: 'k1',
      body: good,
      sig: `${goodSig.slice(0, 40)}*${goodSig.slice(41)}`,
    },
    { name: 'valid signature without padding', kid: 'k1', body: good, sig: goodSig.replace(/=+$/, '') },
    {
      name: 'valid signature in base64url',
      kid: 'k1',
      body: good,
      sig: Buffer.from(goodSig, 'base64').toString('base64url'),
    },
    {
      name: 'empty body, valid',
      kid: 'k1',
      body: new Uint8Array(0),
      sig: sign(trustedKey, new Uint8Array(0)),
    },
  ];
}

/** What the agent decided before batches: the header text decoded with Buffer.from, then verifySigned. */
function expected(c: Case): number {
  const kid = c.kid === '' ? undefined : c.kid;
  const sig = c.sig === undefined || c.sig === '' ? undefined : Buffer.from(c.sig, 'base64');
  const r = verifySigned(trusted, kid, EVENT_CONTEXT, c.body, sig);
  return r === 'ok' ? OUTCOME_OK : r === 'unknown_key' ? OUTCOME_UNKNOWN_KEY : OUTCOME_BAD_SIGNATURE;
}

for (const workers of [0, 1, 2]) {
  test(`verifier pool with ${workers} worker threads: each outcome is verifySigned()'s, in order, and the bodies come back intact`, async (t) => {
    const pool = new VerifierPool(trusted, workers);
    t.after(() => pool.close());
    const all = cases();
    // Several batches in flight at once, each starting smaller than it ends (so every buffer grows).
    const batches = [0, 1, 2].map((shift) => {
      const batch = new VerifyBatch(2);
      const items = [...all.slice(shift), ...all.slice(0, shift)];
      for (const c of items) batch.add(c.kid, c.body, c.sig);
      return { batch, items };
    });
    const outcomes = await Promise.all(batches.map(({ batch }) => pool.verify(batch)));
    batches.forEach(({ batch, items }, b) => {
      assert.equal(batch.length, items.length);
      items.forEach((c, i) => {
        assert.equal(outcomes[b]?.[i], expected(c), `${c.name} (batch ${b})`);
        assert.deepEqual(Buffer.from(batch.body(i)), Buffer.from(c.body), `${c.name}: body after the trip`);
      });
    });
    // The cases themselves cover each outcome.
    const seen = new Set(all.map(expected));
    assert.deepEqual([...seen].sort(), [OUTCOME_OK, OUTCOME_UNKNOWN_KEY, OUTCOME_BAD_SIGNATURE]);
  });
}

test('a verify worker that dies fails the batches it held and is replaced', async (t) => {
  const pool = new VerifierPool(trusted, 1);
  t.after(() => pool.close());
  const batchOf = () => {
    const batch = new VerifyBatch(4);
    for (const c of cases().slice(0, 4)) batch.add(c.kid, c.body, c.sig);
    return batch;
  };
  // Long enough (about 0.1 s of verification) that the worker is still at it when it is ended.
  const long = new VerifyBatch(1);
  const valid = cases()[0] as Case;
  for (let i = 0; i < 1_500; i++) long.add(valid.kid, valid.body, valid.sig);
  const held = pool.verify(long);
  // Ended from outside, as a crash would end it.
  const workers = (pool as unknown as { workers: { terminate(): Promise<number> }[] }).workers;
  await workers[0]?.terminate();
  await assert.rejects(held, /exited/);
  const again = await pool.verify(batchOf());
  assert.deepEqual([...again], cases().slice(0, 4).map(expected));
  assert.equal(pool.size, 1);
});
