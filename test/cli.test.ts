import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { tmpDir } from './harness/index.ts';

const root = new URL('../', import.meta.url).pathname;

function gatesync(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [join(root, 'bin/gatesync.js'), ...args], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
}

test('the hub refuses to start without its settings, naming each one on one line', () => {
  const r = gatesync(['hub']);
  assert.equal(r.status, 2);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0] as string, /GATESYNC_ADMIN_KEY: is required/);
  assert.match(lines[0] as string, /GATESYNC_SIGNING_KEY_FILE: is required/);
});

test('the agent refuses a wrong setting with one line naming it, and never prints secrets', () => {
  const r = gatesync(['agent'], {
    GATESYNC_VENUE: 'bad venue',
    GATESYNC_AGENT_ID: 'a1',
    GATESYNC_NATS_URL: 'http://x',
    GATESYNC_TRUSTED_KEYS: 'k1:short',
    GATESYNC_SCANNER_TOKENS: 's1:tiny-secret',
  });
  assert.equal(r.status, 2);
  const line = r.stderr.trim();
  assert.equal(line.split('\n').length, 1, line);
  for (const name of [
    'GATESYNC_VENUE',
    'GATESYNC_NATS_URL',
    'GATESYNC_TRUSTED_KEYS',
    'GATESYNC_SCANNER_TOKENS',
  ])
    assert.match(line, new RegExp(name));
  assert.doesNotMatch(line, /tiny-secret/);
});

test('keygen writes a private key file only its owner can read, and prints the public key to trust', async (t) => {
  const dir = await tmpDir('gs-cli-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'key.json');
  const r = gatesync(['keygen', '--kid', 'k2026', '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(statSync(out).mode & 0o777, 0o600);
  const key = JSON.parse(readFileSync(out, 'utf8')) as { kid: string; public_key: string };
  assert.equal(key.kid, 'k2026');
  assert.match(r.stderr, new RegExp(`GATESYNC_TRUSTED_KEYS=k2026:${key.public_key}`));
  // It never overwrites an existing key.
  assert.notEqual(gatesync(['keygen', '--kid', 'k2026', '--out', out]).status, 0);
});
