import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
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

test('the demo runs the whole story, and its sample webhook receiver verifies a checkin.created for every admission', async () => {
  // --fast: a 3 s cut and no pauses between scans; the smallest ticket count.
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(
      process.execPath,
      [join(root, 'bin/gatesync.js'), 'demo', '--fast', '--tickets', '40'],
      { cwd: root, env: { PATH: process.env.PATH ?? '' }, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
      (_err, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr }),
    );
  });
  const out = r.stdout;
  assert.equal(r.code, 0, `${out}\n${r.stderr}`);
  for (const section of [
    'Uplink cut',
    'Check-ins at the hub',
    'Webhooks at the sample receiver',
    'Summary',
  ]) {
    assert.match(out, new RegExp(`== ${section}`), section);
  }
  assert.match(out, /^lost 0$/m);
  assert.match(out, /^duplicates 0$/m);
  assert.match(out, /^conflicts found 1$/m);
  assert.match(out, /^conflicts received 1$/m);
  const verified = /^webhooks verified (\d+) of (\d+)$/m.exec(out);
  assert.ok(verified !== null, out);
  assert.equal(verified[1], verified[2]);
  const created = /^checkin\.created (\d+) for (\d+) check-ins admitted at the hub$/m.exec(out);
  assert.ok(created !== null, out);
  assert.equal(created[1], created[2]);
  assert.ok(Number(created[1]) > 0);
  assert.match(out, /webhook checkin\.conflict .* \(signature verified\)/);
  assert.doesNotMatch(out, /FAILED|UNEXPECTED|WEBHOOK REFUSED/);
  // At most the first characters of the endpoint's secret are shown.
  assert.doesNotMatch(out + r.stderr, /whsec_[A-Za-z0-9+/]{8,}/);
  const dir = /removed (\/\S+gatesync-demo-\S+)/.exec(out)?.[1];
  assert.ok(dir !== undefined && !existsSync(dir), 'the work folder is removed');
});
