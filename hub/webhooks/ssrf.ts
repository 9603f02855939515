/**
 * Where a webhook may be sent: the SSRF guard.
 *
 * Why this file: a webhook URL is typed in by an integrator and then called by the hub from inside our
 * network, so an unchecked URL turns the hub into a proxy towards cloud metadata (credentials), the NATS
 * monitoring port, or anything else on the LAN. The check runs twice:
 *
 * 1. at registration (`validateWebhookUrl`): the URL's form, and every address its host resolves to, so
 *    the integrator is told exactly why a URL is refused;
 * 2. at every connection (`safeLookup`, `safeConnector`): the host is resolved again and every address
 *    checked before the socket opens, because DNS may answer differently later (DNS rebinding: a public
 *    address at registration, 169.254.169.254 at delivery). The socket connects only to addresses that
 *    were checked, so there is no window between check and use.
 *
 * Decisions are made on addresses, never on spelling: the WHATWG URL parser turns `0x7f.1`, `2130706433`
 * and `[::ffff:7f00:1]` into canonical forms, IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 addresses
 * are judged as the IPv4 address they embed, and any IPv6 address outside global unicast (2000::/3) that
 * no rule names is refused as reserved. A hostname is refused if any one of its addresses is refused: an
 * attacker controls the order of the answers and the socket may try any of them.
 *
 * The operator's allow-list of subnets (CIDRs in config) lets tests and on-premise receivers through. A
 * cloud metadata address is let through only when the allow-list names it alone (`169.254.169.254/32`),
 * so allowing a link-local or CGNAT subnet for a receiver never opens the metadata service by accident.
 *
 * Choices (where the issue left them open):
 * - http: is accepted when the policy says `allowHttp` (development) or when every address of the host is
 *   inside the allow-list: the operator has vouched for that network (a test server on 127.0.0.1, a receiver
 *   on the venue LAN). Anywhere else only https: is accepted.
 * - A fragment (`#...`) is refused: it is never sent to the receiver, so the URL would not say what is
 *   called, and it is a favourite place to hide a second URL from a human reviewer.
 * - Credentials in the URL, whitespace or control characters (the URL parser silently deletes tabs and
 *   newlines), port 0 and URLs over 2,048 characters are refused.
 * - A host that does not resolve is refused: what cannot be checked is not accepted.
 * - `localhost` and `*.localhost` are loopback by definition (RFC 6761): they are taken to be 127.0.0.1
 *   and ::1 without asking DNS, so a resolver cannot make them look public.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { buildConnector } from 'undici';
import { GatesyncError } from '../../shared/errors.ts';

/** The `code` of every connect-time refusal, so a delivery log or `classifyAttempt` can tell it apart. */
export const SSRF_ERROR_CODE = 'EGATESYNC_SSRF';
export const MAX_WEBHOOK_URL_LENGTH = 2048;

export type AddressCategory =
  | 'loopback'
  | 'private'
  | 'link_local'
  | 'carrier_grade_nat'
  | 'multicast'
  | 'unspecified'
  | 'broadcast'
  | 'documentation'
  | 'benchmarking'
  | 'reserved'
  | 'cloud_metadata'
  | 'not_an_ip';

export interface AddressVerdict {
  allowed: boolean;
  /** Why it was refused, naming the address and the range: "127.0.0.1 is a loopback address (127.0.0.0/8)". */
  reason?: string;
  /** For a refused or allow-listed special address: what it is. */
  category?: AddressCategory;
  /** The range that matched, as a CIDR. */
  range?: string;
  /** True when the allow-list is what let it through. */
  allowListed?: boolean;
}

export interface WebhookUrlPolicy {
  /** Accept http: everywhere (development only). */
  allowHttp: boolean;
  /** Subnets whose addresses are accepted although they are special (and where http: is accepted). */
  allowedCidrs: readonly string[];
}

/** Resolves a hostname to every address it has (IPv4 and IPv6). */
export type Resolver = (hostname: string) => Promise<string[]>;

export type UrlVerdict = { ok: true; url: string; addresses: string[] } | { ok: false; reason: string };

// ---------------------------------------------------------------------------------------------------------
// Addresses and CIDRs as bytes

export interface Ip {
  family: 4 | 6;
  bytes: Uint8Array;
}

export interface Cidr extends Ip {
  prefix: number;
  text: string;
}

function parseIPv4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i]!;
    // Plain decimal only: no leading zeros (octal in some parsers), no hex, no empty parts.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    bytes[i] = n;
  }
  return bytes;
}

function parseIPv6(text: string): Uint8Array | null {
  let s = text;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone); // fe80::1%eth0: the zone names an interface, not an address
  if (isIP(s) !== 6) return null;
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = parseIPv4(tail);
    if (v4 === null) return null;
    const hi = ((v4[0]! << 8) | v4[1]!).toString(16);
    const lo = ((v4[2]! << 8) | v4[3]!).toString(16);
    s = `${s.slice(0, lastColon + 1)}${hi}:${lo}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const head = halves[0] === '' ? [] : halves[0]!.split(':');
  const rest = halves.length === 2 ? (halves[1] === '' ? [] : halves[1]!.split(':')) : [];
  const zeros = 8 - head.length - rest.length;
  if (halves.length === 1 ? zeros !== 0 : zeros < 1) return null;
  const groups = [...head, ...Array<string>(halves.length === 2 ? zeros : 0).fill('0'), ...rest];
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    const g = Number.parseInt(groups[i]!, 16);
    if (!Number.isInteger(g) || g < 0 || g > 0xffff) return null;
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  }
  return bytes;
}

function parseIp(text: string): Ip | null {
  const v4 = parseIPv4(text);
  if (v4 !== null) return { family: 4, bytes: v4 };
  const v6 = parseIPv6(text);
  return v6 === null ? null : { family: 6, bytes: v6 };
}

function formatIPv4(bytes: Uint8Array): string {
  return Array.from(bytes).join('.');
}

function contains(cidr: Cidr, ip: Ip): boolean {
  if (cidr.family !== ip.family) return false;
  const full = cidr.prefix >> 3;
  for (let i = 0; i < full; i++) if (cidr.bytes[i] !== ip.bytes[i]) return false;
  const bits = cidr.prefix & 7;
  if (bits === 0) return true;
  const mask = (0xff << (8 - bits)) & 0xff;
  return (cidr.bytes[full]! & mask) === (ip.bytes[full]! & mask);
}

function configError(message: string): GatesyncError {
  return new GatesyncError('config_invalid', message);
}

/**
 * Parses one allow-list entry: `10.0.0.0/8`, `fd00::/8`, or a bare address meaning that one host.
 * Refuses an entry with host bits set (`10.1.2.3/8`): it is ambiguous, and usually a typo.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const addressText = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIp(addressText);
  if (ip === null || addressText.includes('%')) {
    throw configError(`"${text}" is not a CIDR: "${addressText}" is not an IPv4 or IPv6 address`);
  }
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const prefixText = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > max) {
      throw configError(`"${text}" is not a CIDR: the prefix length must be 0 to ${max}`);
    }
    prefix = Number(prefixText);
  }
  const cidr: Cidr = { ...ip, prefix, text };
  const network = new Uint8Array(ip.bytes);
  for (let bit = prefix; bit < max; bit++) {
    const i = bit >> 3;
    network[i] = network[i]! & ~(0x80 >> (bit & 7));
  }
  if (network.some((b, i) => b !== ip.bytes[i])) {
    const base = ip.family === 4 ? formatIPv4(network) : formatIPv6(network);
    throw configError(`"${text}" has host bits set; the network is ${base}/${prefix}`);
  }
  return cidr;
}

function formatIPv6(bytes: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  // Compress the longest run of two or more zero groups (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/**
 * Every problem in an allow-list, one message per bad entry (empty when it is valid), for a config
 * module that reports all problems at once.
 */
export function allowListProblems(cidrs: readonly string[]): string[] {
  const problems: string[] = [];
  for (const text of cidrs) {
    try {
      parseCidr(text);
    } catch (err: unknown) {
      problems.push(err instanceof Error ? err.message : String(err));
    }
  }
  return problems;
}

const cidrCache = new Map<string, Cidr>();

function compileAllowList(cidrs: readonly string[]): Cidr[] {
  return cidrs.map((text) => {
    let cidr = cidrCache.get(text);
    if (cidr === undefined) {
      cidr = parseCidr(text);
      cidrCache.set(text, cidr);
    }
    return cidr;
  });
}

// ---------------------------------------------------------------------------------------------------------
// The special ranges (IANA IPv4 and IPv6 special-purpose registries, plus cloud metadata services)

type Embedding = 'IPv4-mapped' | 'IPv4-compatible' | 'NAT64' | '6to4';

interface SpecialRange {
  cidr: Cidr;
  category: Exclude<AddressCategory, 'not_an_ip'>;
  note?: string;
  /** The range carries an IPv4 address: judge that instead. */
  embeds?: Embedding;
}

function special(
  text: string,
  category: SpecialRange['category'],
  extra: { note?: string; embeds?: Embedding } = {},
): SpecialRange {
  return { cidr: parseCidr(text), category, ...extra };
}

/** Most specific first: the first range that contains an address names it. */
const SPECIAL_RANGES: readonly SpecialRange[] = [
  // IPv4
  special('169.254.169.254/32', 'cloud_metadata', {
    note: 'the instance metadata service of AWS, GCP, Azure, OCI and others',
  }),
  special('100.100.100.200/32', 'cloud_metadata', { note: 'the Alibaba Cloud metadata service' }),
  special('168.63.129.16/32', 'cloud_metadata', { note: 'the Azure WireServer' }),
  special('255.255.255.255/32', 'broadcast'),
  special('0.0.0.0/8', 'unspecified', { note: '"this network"' }),
  special('10.0.0.0/8', 'private'),
  special('100.64.0.0/10', 'carrier_grade_nat'),
  special('127.0.0.0/8', 'loopback'),
  special('169.254.0.0/16', 'link_local'),
  special('172.16.0.0/12', 'private'),
  special('192.0.0.0/24', 'reserved', { note: 'IETF protocol assignments' }),
  special('192.0.2.0/24', 'documentation', { note: 'TEST-NET-1' }),
  special('192.88.99.0/24', 'reserved', { note: 'the deprecated 6to4 relay anycast' }),
  special('192.168.0.0/16', 'private'),
  special('198.18.0.0/15', 'benchmarking'),
  special('198.51.100.0/24', 'documentation', { note: 'TEST-NET-2' }),
  special('203.0.113.0/24', 'documentation', { note: 'TEST-NET-3' }),
  special('224.0.0.0/4', 'multicast'),
  special('240.0.0.0/4', 'reserved', { note: 'reserved for future use' }),
  // IPv6
  special('::/128', 'unspecified'),
  special('::1/128', 'loopback'),
  special('::ffff:0:0/96', 'reserved', { embeds: 'IPv4-mapped' }),
  special('::/96', 'reserved', { embeds: 'IPv4-compatible', note: 'deprecated IPv4-compatible addresses' }),
  special('64:ff9b::/96', 'reserved', { embeds: 'NAT64' }),
  special('64:ff9b:1::/48', 'private', { note: 'local-use IPv4/IPv6 translation' }),
  special('100::/64', 'reserved', { note: 'discard-only' }),
  special('2001:db8::/32', 'documentation'),
  special('2001::/23', 'reserved', { note: 'IETF protocol assignments, Teredo included' }),
  special('2002::/16', 'reserved', { embeds: '6to4' }),
  special('3fff::/20', 'documentation'),
  special('5f00::/16', 'reserved', { note: 'segment routing identifiers' }),
  special('fd00:ec2::254/128', 'cloud_metadata', { note: 'the AWS instance metadata service over IPv6' }),
  special('fd20:ce::254/128', 'cloud_metadata', { note: 'the GCP metadata server over IPv6' }),
  special('fc00::/7', 'private', { note: 'unique local addresses' }),
  special('fe80::/10', 'link_local'),
  special('fec0::/10', 'private', { note: 'deprecated site-local addresses' }),
  special('ff00::/8', 'multicast'),
];

/** IPv6 global unicast: an IPv6 address outside it that no range above names is refused as reserved. */
const GLOBAL_UNICAST_V6 = parseCidr('2000::/3');

const DESCRIPTION: Record<SpecialRange['category'], string> = {
  loopback: 'a loopback address',
  private: 'a private address',
  link_local: 'a link-local address',
  carrier_grade_nat: 'a carrier-grade NAT address',
  multicast: 'a multicast address',
  unspecified: 'an unspecified address',
  broadcast: 'the broadcast address',
  documentation: 'a documentation address',
  benchmarking: 'a benchmarking address',
  reserved: 'a reserved address',
  cloud_metadata: 'a cloud metadata address',
};

function embeddedIPv4(ip: Ip, how: Embedding): Ip {
  // IPv4-mapped, -compatible and NAT64 (/96) carry it in the last 32 bits; 6to4 in bits 16 to 47.
  const at = how === '6to4' ? 2 : 12;
  return { family: 4, bytes: ip.bytes.slice(at, at + 4) };
}

function judge(ip: Ip, text: string, allow: readonly Cidr[]): AddressVerdict {
  const range = SPECIAL_RANGES.find((r) => contains(r.cidr, ip));
  const listed = allow.some((c) => contains(c, ip));

  if (range?.embeds !== undefined) {
    const v4 = embeddedIPv4(ip, range.embeds);
    const v4Text = formatIPv4(v4.bytes);
    const inner = judge(v4, v4Text, allow);
    if (listed && (inner.category !== 'cloud_metadata' || inner.allowed)) {
      return {
        allowed: true,
        allowListed: true,
        category: inner.category ?? range.category,
        range: range.cidr.text,
      };
    }
    if (inner.allowed && range.embeds === 'IPv4-compatible' && inner.allowListed !== true) {
      return refuse(text, range);
    }
    if (inner.allowed) return inner;
    return {
      ...inner,
      reason: `${text} embeds ${v4Text} (${range.embeds}, ${range.cidr.text}): ${inner.reason}`,
    };
  }

  if (range === undefined) {
    if (ip.family === 6 && !contains(GLOBAL_UNICAST_V6, ip)) {
      if (listed) return { allowed: true, allowListed: true, category: 'reserved' };
      return {
        allowed: false,
        category: 'reserved',
        range: '2000::/3',
        reason: `${text} is a reserved address (outside 2000::/3, the IPv6 global unicast range)`,
      };
    }
    return { allowed: true };
  }

  if (listed) {
    const hostBits = ip.family === 4 ? 32 : 128;
    const listedAlone = allow.some((c) => c.prefix === hostBits && contains(c, ip));
    if (range.category !== 'cloud_metadata' || listedAlone) {
      return { allowed: true, allowListed: true, category: range.category, range: range.cidr.text };
    }
    const verdict = refuse(text, range);
    return {
      ...verdict,
      reason: `${verdict.reason}; the allow-list covers it, but a cloud metadata address is allowed only when listed alone (${text}/${hostBits})`,
    };
  }
  return refuse(text, range);
}

function refuse(text: string, range: SpecialRange): AddressVerdict {
  const where = range.note === undefined ? range.cidr.text : `${range.cidr.text}, ${range.note}`;
  return {
    allowed: false,
    category: range.category,
    range: range.cidr.text,
    reason: `${text} is ${DESCRIPTION[range.category]} (${where})`,
  };
}

/**
 * Whether the hub may connect to `ip` (IPv4 or IPv6, an IPv6 zone suffix ignored), and if not, why.
 * `allowedCidrs` (from config) overrides the refusals, except that a cloud metadata address must be listed
 * alone. Throws `config_invalid` when an allow-list entry is not a CIDR.
 */
export function classifyAddress(ip: string, allowedCidrs: readonly string[] = []): AddressVerdict {
  const parsed = typeof ip === 'string' ? parseIp(ip) : null;
  if (parsed === null) {
    return { allowed: false, category: 'not_an_ip', reason: `"${String(ip)}" is not an IP address` };
  }
  return judge(parsed, ip, compileAllowList(allowedCidrs));
}

/** True when every one of `addresses` is inside the allow-list (so plain http: is accepted for it). */
function allInsideAllowList(addresses: readonly string[], allow: readonly Cidr[]): boolean {
  return (
    addresses.length > 0 &&
    addresses.every((a) => {
      const ip = parseIp(a);
      if (ip === null) return false;
      if (allow.some((c) => contains(c, ip))) return true;
      // ::ffff:127.0.0.1 is 127.0.0.1.
      const mapped = SPECIAL_RANGES.find((r) => r.embeds === 'IPv4-mapped')!;
      return contains(mapped.cidr, ip) && allow.some((c) => contains(c, embeddedIPv4(ip, 'IPv4-mapped')));
    })
  );
}

// ---------------------------------------------------------------------------------------------------------
// Hostnames

/** RFC 6761: `localhost` and names under it are loopback; they are never sent to DNS. */
function isLocalhostName(hostname: string): boolean {
  const name = hostname.toLowerCase().replace(/\.$/, '');
  return name === 'localhost' || name.endsWith('.localhost');
}

const LOCALHOST_ADDRESSES = ['127.0.0.1', '::1'];

export const systemResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) => {
    dnsLookup(hostname, { all: true, verbatim: true }, (err, addresses) => {
      if (err) reject(err);
      else resolve(addresses.map((a) => a.address));
    });
  });

function stripBrackets(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}

async function addressesOf(hostname: string, resolve: Resolver): Promise<string[]> {
  const host = stripBrackets(hostname);
  if (isIP(host.split('%')[0]!) !== 0) return [host];
  if (isLocalhostName(host)) return [...LOCALHOST_ADDRESSES];
  return resolve(host);
}

function refusals(addresses: readonly string[], allowedCidrs: readonly string[]): string[] {
  const out: string[] = [];
  for (const address of addresses) {
    const verdict = classifyAddress(address, allowedCidrs);
    if (!verdict.allowed) out.push(verdict.reason ?? `${address} is refused`);
  }
  return out;
}

function describeRefusal(host: string, addresses: readonly string[], why: readonly string[]): string {
  if (addresses.length === 1 && addresses[0] === host) return why.join('; ');
  const named = isLocalhostName(host) ? `${host} is loopback by definition (RFC 6761) and` : host;
  return `${named} resolves to ${addresses.join(', ')}: ${why.join('; ')}`;
}

function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------------------------------------------------
// Registration

function hasSpaceOrControl(text: string): boolean {
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (c <= 0x20 || c === 0x7f || /\s/u.test(ch)) return true;
  }
  return false;
}

/**
 * Checks a webhook URL at registration: its form, then every address its host has. On success returns the
 * URL as the parser normalised it (store that, not the input) and the addresses it resolved to.
 */
export async function validateWebhookUrl(
  url: string,
  policy: WebhookUrlPolicy,
  resolve: Resolver = systemResolver,
): Promise<UrlVerdict> {
  if (typeof url !== 'string' || url.length === 0) return { ok: false, reason: 'the URL is empty' };
  if (url.length > MAX_WEBHOOK_URL_LENGTH) {
    return { ok: false, reason: `the URL is longer than ${MAX_WEBHOOK_URL_LENGTH} characters` };
  }
  // The URL parser deletes tabs and newlines and trims spaces; refuse them so what is stored is what is called.
  if (hasSpaceOrControl(url)) {
    return { ok: false, reason: 'the URL contains whitespace or control characters' };
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { ok: false, reason: 'the URL is not a valid absolute URL' };
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    return {
      ok: false,
      reason: `the URL's scheme is ${parsed.protocol.replace(/:$/, '')}; only https is accepted`,
    };
  }
  if (parsed.username !== '' || parsed.password !== '') {
    return {
      ok: false,
      reason: 'the URL carries a user name or password; receivers authenticate webhooks by their signature',
    };
  }
  if (url.includes('#')) {
    return { ok: false, reason: 'the URL has a fragment (#...), which is never sent to the receiver' };
  }
  if (parsed.port === '0') return { ok: false, reason: 'the URL names port 0' };

  const host = stripBrackets(parsed.hostname);
  let addresses: string[];
  try {
    addresses = await addressesOf(host, resolve);
  } catch (err: unknown) {
    return { ok: false, reason: `${host} could not be resolved (${errorCode(err)})` };
  }
  if (addresses.length === 0) return { ok: false, reason: `${host} resolves to no address` };

  const why = refusals(addresses, policy.allowedCidrs);
  if (why.length > 0) return { ok: false, reason: describeRefusal(host, addresses, why) };

  if (
    parsed.protocol === 'http:' &&
    !policy.allowHttp &&
    !allInsideAllowList(addresses, compileAllowList(policy.allowedCidrs))
  ) {
    return {
      ok: false,
      reason: `the URL uses http; only https is accepted, except for receivers inside the configured allow-list of subnets (${host} is not)`,
    };
  }
  return { ok: true, url: parsed.href, addresses };
}

// ---------------------------------------------------------------------------------------------------------
// Connect time

/** A connection refused by the SSRF guard. `code` is always `EGATESYNC_SSRF`. */
export class SsrfError extends Error {
  readonly code = SSRF_ERROR_CODE;
  readonly hostname: string;

  constructor(hostname: string, message: string) {
    super(message);
    this.name = 'SsrfError';
    this.hostname = hostname;
  }
}

function familyOf(options: LookupOptions): 0 | 4 | 6 {
  const f = options.family as number | string | undefined;
  if (f === 4 || f === 'IPv4') return 4;
  if (f === 6 || f === 'IPv6') return 6;
  return 0;
}

/**
 * A `lookup` for `net.connect`, `tls.connect` and undici's `connect: { lookup }`: resolves the host again
 * at connect time and fails with an `SsrfError` (code `EGATESYNC_SSRF`) if any address is refused, so the
 * socket only ever sees checked addresses. Resolver errors (ENOTFOUND, ...) pass through with their code.
 *
 * Node skips `lookup` when the host is an IP literal: use `safeConnector`, which checks literals too.
 */
export function safeLookup(
  policy: Pick<WebhookUrlPolicy, 'allowedCidrs'>,
  resolve: Resolver = systemResolver,
): LookupFunction {
  compileAllowList(policy.allowedCidrs); // a bad entry fails here, at start-up, not on the first delivery
  return (hostname, options, callback) => {
    addressesOf(hostname, resolve).then(
      (addresses) => {
        if (addresses.length === 0) {
          const err: NodeJS.ErrnoException = new Error(`${hostname} resolves to no address`);
          err.code = 'ENOTFOUND';
          callback(err, '');
          return;
        }
        const why = refusals(addresses, policy.allowedCidrs);
        if (why.length > 0) {
          callback(new SsrfError(hostname, describeRefusal(hostname, addresses, why)), '');
          return;
        }
        const wanted = familyOf(options);
        const usable: LookupAddress[] = addresses
          .map((address) => ({ address: address.split('%')[0]!, family: isIP(address.split('%')[0]!) }))
          .filter((a) => wanted === 0 || a.family === wanted);
        const first = usable[0];
        if (first === undefined) {
          const err: NodeJS.ErrnoException = new Error(`${hostname} has no IPv${wanted} address`);
          err.code = 'ENOTFOUND';
          callback(err, '');
          return;
        }
        if (options.all === true) callback(null, usable);
        else callback(null, first.address, first.family);
      },
      (err: unknown) => callback(err as NodeJS.ErrnoException, ''),
    );
  };
}

export type Connector = ReturnType<typeof buildConnector>;
export type ConnectorOptions = Omit<buildConnector.BuildOptions, 'lookup'>;

/**
 * An undici connector (`new Agent({ connect: safeConnector(policy) })`) that refuses IP-literal hosts
 * itself and resolves names through `safeLookup`. `options` go to undici's `buildConnector` (timeout, TLS).
 */
export function safeConnector(
  policy: Pick<WebhookUrlPolicy, 'allowedCidrs'>,
  options: ConnectorOptions & { resolve?: Resolver } = {},
): Connector {
  const { resolve, ...connectOptions } = options;
  const connect = buildConnector({
    ...connectOptions,
    lookup: safeLookup(policy, resolve),
  } as buildConnector.BuildOptions);
  return (opts, callback) => {
    const host = stripBrackets(opts.hostname);
    if (isIP(host.split('%')[0]!) !== 0) {
      const verdict = classifyAddress(host, policy.allowedCidrs);
      if (!verdict.allowed) {
        const err = new SsrfError(host, verdict.reason ?? `${host} is refused`);
        process.nextTick(() => callback(err, null));
        return;
      }
    }
    connect(opts, callback);
  };
}
