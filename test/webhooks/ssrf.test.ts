import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type TestContext, test } from 'node:test';
import { Agent, request } from 'undici';
import {
  allowListProblems,
  classifyAddress,
  MAX_WEBHOOK_URL_LENGTH,
  type Resolver,
  SSRF_ERROR_CODE,
  safeConnector,
  safeLookup,
  validateWebhookUrl,
  type WebhookUrlPolicy,
} from '../../hub/webhooks/ssrf.ts';
import { GatesyncError } from '../../shared/errors.ts';

type Row = [ip: string, category: string, range: string];

const REFUSED_V4: Row[] = [
  ['127.0.0.1', 'loopback', '127.0.0.0/8'],
  ['127.255.255.254', 'loopback', '127.0.0.0/8'],
  ['10.0.0.1', 'private', '10.0.0.0/8'],
  ['10.255.255.255', 'private', '10.0.0.0/8'],
  ['172.16.0.1', 'private', '172.16.0.0/12'],
  ['172.31.255.255', 'private', '172.16.0.0/12'],
  ['192.168.1.1', 'private', '192.168.0.0/16'],
  ['169.254.1.1', 'link_local', '169.254.0.0/16'],
  ['169.254.169.254', 'cloud_metadata', '169.254.169.254/32'],
  ['100.64.0.1', 'carrier_grade_nat', '100.64.0.0/10'],
  ['100.127.255.255', 'carrier_grade_nat', '100.64.0.0/10'],
  ['100.100.100.200', 'cloud_metadata', '100.100.100.200/32'],
  ['168.63.129.16', 'cloud_metadata', '168.63.129.16/32'],
  ['224.0.0.1', 'multicast', '224.0.0.0/4'],
  ['239.255.255.255', 'multicast', '224.0.0.0/4'],
  ['0.0.0.0', 'unspecified', '0.0.0.0/8'],
  ['0.1.2.3', 'unspecified', '0.0.0.0/8'],
  ['192.0.0.8', 'reserved', '192.0.0.0/24'],
  ['192.0.2.1', 'documentation', '192.0.2.0/24'],
  ['192.88.99.1', 'reserved', '192.88.99.0/24'],
  ['198.18.0.1', 'benchmarking', '198.18.0.0/15'],
  ['198.19.255.255', 'benchmarking', '198.18.0.0/15'],
  ['198.51.100.7', 'documentation', '198.51.100.0/24'],
  ['203.0.113.9', 'documentation', '203.0.113.0/24'],
  ['240.0.0.1', 'reserved', '240.0.0.0/4'],
  ['254.255.255.255', 'reserved', '240.0.0.0/4'],
  ['255.255.255.255', 'broadcast', '255.255.255.255/32'],
];

const REFUSED_V6: Row[] = [
  ['::', 'unspecified', '::/128'],
  ['::1', 'loopback', '::1/128'],
  ['0:0:0:0:0:0:0:1', 'loopback', '::1/128'],
  ['fc00::1', 'private', 'fc00::/7'],
  ['fd12:3456:789a::1', 'private', 'fc00::/7'],
  ['fe80::1', 'link_local', 'fe80::/10'],
  ['fe80::1%eth0', 'link_local', 'fe80::/10'],
  ['febf:ffff::1', 'link_local', 'fe80::/10'],
  ['fec0::1', 'private', 'fec0::/10'],
  ['ff02::1', 'multicast', 'ff00::/8'],
  ['ff0e::101', 'multicast', 'ff00::/8'],
  ['2001:db8::1', 'documentation', '2001:db8::/32'],
  ['3fff::1', 'documentation', '3fff::/20'],
  ['100::1', 'reserved', '100::/64'],
  ['2001::1', 'reserved', '2001::/23'],
  ['5f00::1', 'reserved', '5f00::/16'],
  ['64:ff9b:1::1', 'private', '64:ff9b:1::/48'],
  ['fd00:ec2::254', 'cloud_metadata', 'fd00:ec2::254/128'],
  ['fd20:ce::254', 'cloud_metadata', 'fd20:ce::254/128'],
  ['4000::1', 'reserved', '2000::/3'],
  ['fe00::1', 'reserved', '2000::/3'],
  ['::8.8.8.8', 'reserved', '::/96'],
];

/** IPv6 addresses that embed an IPv4 address are judged as that address. */
const REFUSED_EMBEDDED: Array<[ip: string, category: string, v4: string, how: string]> = [
  ['::ffff:127.0.0.1', 'loopback', '127.0.0.1', 'IPv4-mapped, ::ffff:0:0/96'],
  ['::ffff:7f00:1', 'loopback', '127.0.0.1', 'IPv4-mapped, ::ffff:0:0/96'],
  ['::ffff:10.0.0.1', 'private', '10.0.0.1', 'IPv4-mapped, ::ffff:0:0/96'],
  ['::ffff:169.254.169.254', 'cloud_metadata', '169.254.169.254', 'IPv4-mapped, ::ffff:0:0/96'],
  ['0:0:0:0:0:ffff:c0a8:101', 'private', '192.168.1.1', 'IPv4-mapped, ::ffff:0:0/96'],
  ['::127.0.0.1', 'loopback', '127.0.0.1', 'IPv4-compatible, ::/96'],
  ['::a9fe:a9fe', 'cloud_metadata', '169.254.169.254', 'IPv4-compatible, ::/96'],
  ['64:ff9b::10.0.0.1', 'private', '10.0.0.1', 'NAT64, 64:ff9b::/96'],
  ['64:ff9b::a9fe:a9fe', 'cloud_metadata', '169.254.169.254', 'NAT64, 64:ff9b::/96'],
  ['2002:7f00:1::', 'loopback', '127.0.0.1', '6to4, 2002::/16'],
  ['2002:c0a8:101::1', 'private', '192.168.1.1', '6to4, 2002::/16'],
  ['2002:6440:1::', 'carrier_grade_nat', '100.64.0.1', '6to4, 2002::/16'],
];

const ALLOWED = [
  '8.8.8.8',
  '1.1.1.1',
  '93.184.216.34',
  '9.255.255.255',
  '11.0.0.0',
  '100.63.255.255',
  '100.128.0.0',
  '126.255.255.255',
  '128.0.0.0',
  '169.253.255.255',
  '169.255.0.0',
  '172.15.255.255',
  '172.32.0.0',
  '192.167.255.255',
  '192.169.0.0',
  '192.0.1.1',
  '198.17.255.255',
  '198.20.0.0',
  '203.0.114.1',
  '168.63.129.17',
  '223.255.255.255',
  '2606:4700:4700::1111',
  '2001:4860:4860::8888',
  '2001:200::1',
  '2a00:1450:4001:80b::200e',
  '::ffff:8.8.8.8',
  '64:ff9b::8.8.8.8',
  '2002:808:808::1',
];

test('every refused IPv4 range is named, with the address and the CIDR', () => {
  for (const [ip, category, range] of REFUSED_V4) {
    const verdict = classifyAddress(ip);
    assert.equal(verdict.allowed, false, ip);
    assert.equal(verdict.category, category, ip);
    assert.equal(verdict.range, range, ip);
    assert.ok(verdict.reason?.startsWith(`${ip} is `), `${ip}: ${verdict.reason}`);
    assert.ok(verdict.reason?.includes(`(${range}`), `${ip}: ${verdict.reason}`);
  }
  assert.equal(classifyAddress('127.0.0.1').reason, '127.0.0.1 is a loopback address (127.0.0.0/8)');
  assert.equal(classifyAddress('10.1.2.3').reason, '10.1.2.3 is a private address (10.0.0.0/8)');
  assert.equal(
    classifyAddress('100.64.0.1').reason,
    '100.64.0.1 is a carrier-grade NAT address (100.64.0.0/10)',
  );
  assert.match(
    classifyAddress('169.254.169.254').reason ?? '',
    /cloud metadata address \(169\.254\.169\.254\/32, .*AWS/,
  );
});

test('every refused IPv6 range is named, with the address and the CIDR', () => {
  for (const [ip, category, range] of REFUSED_V6) {
    const verdict = classifyAddress(ip);
    assert.equal(verdict.allowed, false, ip);
    assert.equal(verdict.category, category, ip);
    assert.equal(verdict.range, range, ip);
    assert.ok(verdict.reason?.startsWith(`${ip} is `), `${ip}: ${verdict.reason}`);
  }
  assert.equal(classifyAddress('::1').reason, '::1 is a loopback address (::1/128)');
  assert.equal(
    classifyAddress('4000::1').reason,
    '4000::1 is a reserved address (outside 2000::/3, the IPv6 global unicast range)',
  );
});

test('IPv4-mapped, IPv4-compatible, NAT64 and 6to4 addresses are judged as the IPv4 address they carry', () => {
  for (const [ip, category, v4, how] of REFUSED_EMBEDDED) {
    const verdict = classifyAddress(ip);
    assert.equal(verdict.allowed, false, ip);
    assert.equal(verdict.category, category, ip);
    assert.ok(
      verdict.reason?.startsWith(`${ip} embeds ${v4} (${how}): ${v4} is `),
      `${ip}: ${verdict.reason}`,
    );
  }
  assert.equal(
    classifyAddress('::ffff:127.0.0.1').reason,
    '::ffff:127.0.0.1 embeds 127.0.0.1 (IPv4-mapped, ::ffff:0:0/96): 127.0.0.1 is a loopback address (127.0.0.0/8)',
  );
});

test('public addresses, including the neighbours of every range, are allowed', () => {
  for (const ip of ALLOWED) assert.deepEqual(classifyAddress(ip), { allowed: true }, ip);
});

test('things that are not IP addresses are refused, whatever the allow-list', () => {
  for (const text of [
    'example.com',
    '',
    '1.2.3',
    '01.2.3.4',
    '1.2.3.256',
    '0x7f.0.0.1',
    ':::1',
    '[::1]',
    '1::2::3',
  ]) {
    const verdict = classifyAddress(text, ['0.0.0.0/0', '::/0']);
    assert.equal(verdict.allowed, false, text);
    assert.equal(verdict.category, 'not_an_ip', text);
    assert.equal(verdict.reason, `"${text}" is not an IP address`);
  }
});

test('the allow-list lets its subnets through, and only them', () => {
  const cases: Array<[ip: string, allow: string[], allowed: boolean]> = [
    ['127.0.0.1', ['127.0.0.0/8'], true],
    ['127.0.0.1', ['127.0.0.1'], true],
    ['127.0.0.2', ['127.0.0.1/32'], false],
    ['::1', ['::1/128'], true],
    ['::1', ['127.0.0.0/8'], false],
    ['::ffff:127.0.0.1', ['127.0.0.0/8'], true],
    ['64:ff9b::7f00:1', ['127.0.0.0/8'], true],
    ['10.1.2.3', ['10.1.0.0/16'], true],
    ['10.2.0.1', ['10.1.0.0/16'], false],
    ['192.168.7.7', ['10.0.0.0/8', '192.168.7.0/24'], true],
    ['fd12::1', ['fd00::/8'], true],
    ['fe80::1%eth0', ['fe80::/10'], true],
    ['169.254.1.1', ['169.254.0.0/16'], true],
    ['100.64.1.1', ['100.64.0.0/10'], true],
    ['8.8.8.8', ['10.0.0.0/8'], true],
  ];
  for (const [ip, allow, allowed] of cases) {
    const verdict = classifyAddress(ip, allow);
    assert.equal(verdict.allowed, allowed, `${ip} with ${allow.join(',')}: ${verdict.reason}`);
    if (allowed && ip !== '8.8.8.8') assert.equal(verdict.allowListed, true, ip);
  }
});

test('a cloud metadata address is let through only when the allow-list names it alone', () => {
  const cases: Array<[ip: string, allow: string[], allowed: boolean]> = [
    ['169.254.169.254', ['169.254.0.0/16'], false],
    ['169.254.169.254', ['0.0.0.0/0'], false],
    ['169.254.169.254', ['169.254.169.254/32'], true],
    ['169.254.169.254', ['169.254.169.254'], true],
    ['::ffff:169.254.169.254', ['169.254.0.0/16'], false],
    ['::ffff:169.254.169.254', ['169.254.169.254/32'], true],
    ['100.100.100.200', ['100.64.0.0/10'], false],
    ['fd00:ec2::254', ['fc00::/7'], false],
    ['fd00:ec2::254', ['fd00:ec2::254/128'], true],
  ];
  for (const [ip, allow, allowed] of cases) {
    const verdict = classifyAddress(ip, allow);
    assert.equal(verdict.allowed, allowed, `${ip} with ${allow.join(',')}`);
    if (!allowed) assert.match(verdict.reason ?? '', /allowed only when listed alone \(.*\/(32|128)\)/, ip);
  }
});

test('a malformed allow-list entry is a config error naming the entry', () => {
  const cases: Array<[entry: string, why: RegExp]> = [
    ['10.0.0.0/33', /prefix length must be 0 to 32/],
    ['::1/129', /prefix length must be 0 to 128/],
    ['10.0.0.0/08', /prefix length/],
    ['10.0.0.0/', /prefix length/],
    ['10.1.2.3/8', /host bits set; the network is 10\.0\.0\.0\/8/],
    ['fd12::1/8', /host bits set; the network is fd00::\/8/],
    ['abc', /"abc" is not an IPv4 or IPv6 address/],
    ['fe80::1%eth0/128', /not an IPv4 or IPv6 address/],
    ['', /not an IPv4 or IPv6 address/],
  ];
  for (const [entry, why] of cases) {
    assert.throws(
      () => classifyAddress('8.8.8.8', [entry]),
      (err: unknown) =>
        err instanceof GatesyncError && err.code === 'config_invalid' && why.test(err.message),
      entry,
    );
  }
  assert.deepEqual(allowListProblems(['10.0.0.0/8', '::1/128', '0.0.0.0/0']), []);
  assert.equal(allowListProblems(['10.0.0.0/8', 'abc', '10.1.2.3/8']).length, 2);
});

// ---------------------------------------------------------------------------------------------------------
// validateWebhookUrl

const STRICT: WebhookUrlPolicy = { allowHttp: false, allowedCidrs: [] };

function resolverFrom(table: Record<string, string[] | Error>): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const resolve = async (host: string) => {
    calls.push(host);
    const answer = table[host];
    if (answer === undefined)
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    if (answer instanceof Error) throw answer;
    return answer;
  };
  return Object.assign(resolve, { calls });
}

const DNS = resolverFrom({
  'hooks.example.com': ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'],
  'mixed.example.com': ['93.184.216.34', '10.0.0.5'],
  'internal.example.com': ['10.0.0.5'],
  'metadata.example.com': ['169.254.169.254'],
  'receiver.lan': ['10.1.2.3'],
  'half.lan': ['10.1.2.3', '93.184.216.34'],
  'nothing.example.com': [],
  'flaky.example.com': Object.assign(new Error('queryA ESERVFAIL'), { code: 'ESERVFAIL' }),
});

test('a public https URL is accepted and returned as the parser normalised it', async () => {
  const verdict = await validateWebhookUrl('https://Hooks.Example.com:443/in?x=1', STRICT, DNS);
  assert.deepEqual(verdict, {
    ok: true,
    url: 'https://hooks.example.com/in?x=1',
    addresses: ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'],
  });
});

test('URLs are refused, each with the exact reason', async () => {
  const cases: Array<[url: string, reason: string | RegExp, policy?: WebhookUrlPolicy]> = [
    ['', 'the URL is empty'],
    [`https://hooks.example.com/${'a'.repeat(MAX_WEBHOOK_URL_LENGTH)}`, /longer than 2048 characters/],
    ['not-a-url', 'the URL is not a valid absolute URL'],
    ['/relative/path', 'the URL is not a valid absolute URL'],
    ['ftp://hooks.example.com/', "the URL's scheme is ftp; only https is accepted"],
    ['javascript:alert(1)', "the URL's scheme is javascript; only https is accepted"],
    ['file:///etc/passwd', "the URL's scheme is file; only https is accepted"],
    ['https://user:pass@hooks.example.com/', /carries a user name or password/],
    ['https://token@hooks.example.com/', /carries a user name or password/],
    ['https://hooks.example.com/#frag', /has a fragment/],
    ['https://hooks.example.com/#', /has a fragment/],
    ['https://hooks.example.com/a b', 'the URL contains whitespace or control characters'],
    ['https://hooks.exa\tmple.com/', 'the URL contains whitespace or control characters'],
    [' https://hooks.example.com/', 'the URL contains whitespace or control characters'],
    ['https://hooks.example.com/\n', 'the URL contains whitespace or control characters'],
    ['https://hooks.example.com:0/', 'the URL names port 0'],
    ['https://127.0.0.1/', '127.0.0.1 is a loopback address (127.0.0.0/8)'],
    ['https://0x7f.1/', '127.0.0.1 is a loopback address (127.0.0.0/8)'],
    ['https://2130706433/', '127.0.0.1 is a loopback address (127.0.0.0/8)'],
    ['https://[::1]:8443/', '::1 is a loopback address (::1/128)'],
    ['https://[::ffff:127.0.0.1]/', /^::ffff:7f00:1 embeds 127\.0\.0\.1 \(IPv4-mapped/],
    ['https://169.254.169.254/latest/meta-data/', /^169\.254\.169\.254 is a cloud metadata address/],
    ['https://[fd00:ec2::254]/', /^fd00:ec2::254 is a cloud metadata address/],
    ['https://10.0.0.1/', '10.0.0.1 is a private address (10.0.0.0/8)'],
    [
      'https://internal.example.com/',
      'internal.example.com resolves to 10.0.0.5: 10.0.0.5 is a private address (10.0.0.0/8)',
    ],
    [
      'https://mixed.example.com/',
      'mixed.example.com resolves to 93.184.216.34, 10.0.0.5: 10.0.0.5 is a private address (10.0.0.0/8)',
    ],
    [
      'https://metadata.example.com/',
      /^metadata\.example\.com resolves to 169\.254\.169\.254: .*cloud metadata/,
    ],
    ['https://unknown.example.com/', 'unknown.example.com could not be resolved (ENOTFOUND)'],
    ['https://flaky.example.com/', 'flaky.example.com could not be resolved (ESERVFAIL)'],
    ['https://nothing.example.com/', 'nothing.example.com resolves to no address'],
    [
      'http://hooks.example.com/',
      'the URL uses http; only https is accepted, except for receivers inside the configured allow-list of subnets (hooks.example.com is not)',
    ],
    ['http://half.lan/', /the URL uses http/, { allowHttp: false, allowedCidrs: ['10.1.0.0/16'] }],
  ];
  for (const [url, reason, policy] of cases) {
    const verdict = await validateWebhookUrl(url, policy ?? STRICT, DNS);
    assert.equal(verdict.ok, false, url);
    if (verdict.ok) continue;
    if (typeof reason === 'string') assert.equal(verdict.reason, reason, url);
    else assert.match(verdict.reason, reason, url);
  }
});

test('localhost is refused as loopback without asking DNS', async () => {
  const resolve = resolverFrom({ localhost: ['93.184.216.34'], 'api.localhost': ['93.184.216.34'] });
  for (const url of [
    'https://localhost/',
    'https://LOCALHOST./',
    'https://api.localhost:8443/',
    'http://localhost/',
  ]) {
    const verdict = await validateWebhookUrl(url, STRICT, resolve);
    assert.equal(verdict.ok, false, url);
    if (!verdict.ok) {
      assert.match(
        verdict.reason,
        /^\S+ is loopback by definition \(RFC 6761\) and resolves to 127\.0\.0\.1, ::1: 127\.0\.0\.1 is a loopback address \(127\.0\.0\.0\/8\); ::1 is a loopback address \(::1\/128\)$/,
        url,
      );
    }
  }
  assert.deepEqual(resolve.calls, []);
});

test('a fake resolver returning a private address gets the URL refused; the allow-list lets it through', async () => {
  const resolve = resolverFrom({ 'receiver.lan': ['10.1.2.3'] });
  const refused = await validateWebhookUrl('https://receiver.lan/hook', STRICT, resolve);
  assert.deepEqual(refused, {
    ok: false,
    reason: 'receiver.lan resolves to 10.1.2.3: 10.1.2.3 is a private address (10.0.0.0/8)',
  });
  const onPremise = { allowHttp: false, allowedCidrs: ['10.1.0.0/16'] };
  assert.deepEqual(await validateWebhookUrl('https://receiver.lan/hook', onPremise, resolve), {
    ok: true,
    url: 'https://receiver.lan/hook',
    addresses: ['10.1.2.3'],
  });
});

test('http is accepted only with allowHttp or for hosts wholly inside the allow-list', async () => {
  const cases: Array<[url: string, policy: WebhookUrlPolicy, ok: boolean]> = [
    ['http://hooks.example.com/', STRICT, false],
    ['http://hooks.example.com/', { allowHttp: true, allowedCidrs: [] }, true],
    ['http://receiver.lan/', { allowHttp: false, allowedCidrs: ['10.1.0.0/16'] }, true],
    ['http://half.lan/', { allowHttp: false, allowedCidrs: ['10.1.0.0/16'] }, false],
    ['http://127.0.0.1:3000/', { allowHttp: false, allowedCidrs: ['127.0.0.0/8'] }, true],
    ['http://[::ffff:127.0.0.1]:3000/', { allowHttp: false, allowedCidrs: ['127.0.0.0/8'] }, true],
    ['http://localhost:3000/', { allowHttp: false, allowedCidrs: ['127.0.0.0/8'] }, false],
    ['http://localhost:3000/', { allowHttp: false, allowedCidrs: ['127.0.0.0/8', '::1/128'] }, true],
    ['https://127.0.0.1:3000/', { allowHttp: false, allowedCidrs: ['127.0.0.0/8'] }, true],
  ];
  for (const [url, policy, ok] of cases) {
    const verdict = await validateWebhookUrl(url, policy, DNS);
    assert.equal(verdict.ok, ok, `${url} ${JSON.stringify(policy)}: ${verdict.ok ? '' : verdict.reason}`);
  }
});

// ---------------------------------------------------------------------------------------------------------
// Connect time

async function receiver(t: TestContext): Promise<{ port: number; hits: () => number }> {
  let hits = 0;
  const server = createServer((_req, res) => {
    hits += 1;
    res.end('ok');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as AddressInfo).port, hits: () => hits };
}

function agent(t: TestContext, connect: ConstructorParameters<typeof Agent>[0]): Agent {
  const a = new Agent(connect);
  t.after(() => a.close());
  return a;
}

async function refusal(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (err: unknown) {
    return err as Error & { code?: string };
  }
  assert.fail('the request was expected to be refused');
}

test('safeLookup hands the socket only checked addresses, in the form it asked for', async () => {
  const lookup = safeLookup(
    { allowedCidrs: ['10.0.0.0/8'] },
    resolverFrom({
      dual: ['10.0.0.1', 'fd00::1'],
      lan: ['10.0.0.1', '10.0.0.2'],
      bad: ['10.0.0.1', '127.0.0.1'],
    }),
  );
  const call = (host: string, options: Parameters<typeof lookup>[1]) =>
    new Promise<{ err: NodeJS.ErrnoException | null; address: unknown; family: unknown }>((resolve) =>
      lookup(host, options, (err, address, family) => resolve({ err, address, family })),
    );

  const all = await call('lan', { all: true });
  assert.deepEqual(all.address, [
    { address: '10.0.0.1', family: 4 },
    { address: '10.0.0.2', family: 4 },
  ]);
  const one = await call('lan', {});
  assert.deepEqual([one.err, one.address, one.family], [null, '10.0.0.1', 4]);

  const dual = await call('dual', { family: 4 });
  assert.equal(dual.err?.code, SSRF_ERROR_CODE, 'fd00::1 is not allow-listed, so the whole name is refused');

  const bad = await call('bad', { all: true });
  assert.equal(bad.err?.code, SSRF_ERROR_CODE);
  assert.equal(
    bad.err?.message,
    'bad resolves to 10.0.0.1, 127.0.0.1: 127.0.0.1 is a loopback address (127.0.0.0/8)',
  );

  const missing = await call('missing', { all: true });
  assert.equal(missing.err?.code, 'ENOTFOUND');

  const v6only = await call('lan', { family: 6 });
  assert.equal(v6only.err?.code, 'ENOTFOUND');
});

test('a real undici request to a loopback receiver is refused at connect time unless 127.0.0.0/8 is allowed', async (t) => {
  const { port, hits } = await receiver(t);
  const resolve = resolverFrom({ 'receiver.test': ['127.0.0.1'] });

  const strict = agent(t, { connect: { lookup: safeLookup({ allowedCidrs: [] }, resolve) } });
  const err = await refusal(request(`http://receiver.test:${port}/hook`, { dispatcher: strict }));
  assert.equal(err.code, SSRF_ERROR_CODE);
  assert.equal(
    err.message,
    'receiver.test resolves to 127.0.0.1: 127.0.0.1 is a loopback address (127.0.0.0/8)',
  );
  assert.equal(hits(), 0);

  const allowing = agent(t, { connect: { lookup: safeLookup({ allowedCidrs: ['127.0.0.0/8'] }, resolve) } });
  const res = await request(`http://receiver.test:${port}/hook`, { dispatcher: allowing });
  assert.equal(res.statusCode, 200);
  assert.equal(await res.body.text(), 'ok');
  assert.equal(hits(), 1);
});

test('localhost at connect time is loopback by definition: refused, and allowed when both loopbacks are', async (t) => {
  const { port, hits } = await receiver(t);
  const strict = agent(t, { connect: { lookup: safeLookup({ allowedCidrs: ['127.0.0.0/8'] }) } });
  const err = await refusal(request(`http://localhost:${port}/`, { dispatcher: strict }));
  assert.equal(err.code, SSRF_ERROR_CODE);
  assert.match(err.message, /::1 is a loopback address/);

  const allowing = agent(t, {
    connect: { lookup: safeLookup({ allowedCidrs: ['127.0.0.0/8', '::1/128'] }) },
  });
  const res = await request(`http://localhost:${port}/`, { dispatcher: allowing });
  assert.equal(res.statusCode, 200);
  await res.body.dump();
  assert.equal(hits(), 1);
});

test('DNS rebinding: a name that was public at registration and loopback at delivery is refused at connect', async (t) => {
  const { port, hits } = await receiver(t);
  let answers = 0;
  const rebinding: Resolver = async () => (answers++ === 0 ? ['93.184.216.34'] : ['127.0.0.1']);
  const policy = { allowHttp: true, allowedCidrs: [] };

  const registered = await validateWebhookUrl(`http://rebind.example.com:${port}/`, policy, rebinding);
  assert.equal(registered.ok, true);

  const dispatcher = agent(t, { connect: safeConnector(policy, { resolve: rebinding }) });
  const err = await refusal(request(`http://rebind.example.com:${port}/`, { dispatcher }));
  assert.equal(err.code, SSRF_ERROR_CODE);
  assert.match(
    err.message,
    /^rebind\.example\.com resolves to 127\.0\.0\.1: 127\.0\.0\.1 is a loopback address/,
  );
  assert.equal(hits(), 0);
});

test('Node skips lookup for an IP-literal host, so safeConnector checks literals itself', async (t) => {
  const { port, hits } = await receiver(t);
  // What safeConnector protects against: a lookup-only guard never sees http://127.0.0.1.
  const lookupOnly = agent(t, { connect: { lookup: safeLookup({ allowedCidrs: [] }) } });
  const leaked = await request(`http://127.0.0.1:${port}/`, { dispatcher: lookupOnly });
  await leaked.body.dump();
  assert.equal(hits(), 1);

  for (const url of [
    `http://127.0.0.1:${port}/`,
    `http://[::ffff:127.0.0.1]:${port}/`,
    `http://0x7f.1:${port}/`,
  ]) {
    const guarded = agent(t, { connect: safeConnector({ allowedCidrs: [] }) });
    const err = await refusal(request(url, { dispatcher: guarded }));
    assert.equal(err.code, SSRF_ERROR_CODE, url);
    assert.match(err.message, /127\.0\.0\.1 is a loopback address \(127\.0\.0\.0\/8\)$/, url);
  }
  assert.equal(hits(), 1);

  const allowed = agent(t, { connect: safeConnector({ allowedCidrs: ['127.0.0.0/8'] }) });
  const res = await request(`http://127.0.0.1:${port}/`, { dispatcher: allowed });
  assert.equal(res.statusCode, 200);
  await res.body.dump();
  assert.equal(hits(), 2);
});

test('a connector with a bad allow-list fails when it is built, not on the first delivery', () => {
  assert.throws(
    () => safeConnector({ allowedCidrs: ['10.0.0.0/33'] }),
    (err: unknown) => err instanceof GatesyncError && err.code === 'config_invalid',
  );
});
