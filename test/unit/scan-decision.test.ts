import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type CodeCheck, type DecisionInput, decideScan } from '../../gate-agent/scan-decision.ts';
import type { Presence, StoredTicket } from '../../gate-agent/ticket-store.ts';

const NOW = 1_800_000_000_000;
const HOUR = 3_600_000;

function ticket(extra: Partial<StoredTicket> = {}): StoredTicket {
  return {
    id: 't1',
    rev: 1,
    status: 'valid',
    holder: 'A',
    tier: 'GA',
    seat: null,
    gates: [],
    valid_from: NOW - HOUR,
    valid_until: NOW + HOUR,
    revoked_reason: null,
    qr_hash: '\u0000'.repeat(16),
    stream_seq: 1,
    event_at: NOW - HOUR,
    ...extra,
  };
}

const token = (extra: Partial<Extract<CodeCheck, { kind: 'token' }>> = {}): CodeCheck => ({
  kind: 'token',
  venue: 'v1',
  ticketId: 't1',
  valid_from: NOW - HOUR,
  valid_until: NOW + HOUR,
  gates: [],
  ...extra,
});

const inside: Presence = {
  ticket_id: 't1',
  inside: true,
  first_checkin_id: 'c1',
  last_checkin_id: 'c1',
  last_at: NOW - 1000,
  entries: 1,
};
const outside: Presence = { ...inside, inside: false };

function input(extra: Partial<DecisionInput>): DecisionInput {
  return {
    code: token(),
    ticket: ticket(),
    presence: undefined,
    venue: 'v1',
    gate: 'north',
    direction: 'in',
    now: NOW,
    reentry: false,
    ...extra,
  };
}

const table: [string, Partial<DecisionInput>, string, boolean?][] = [
  ['a synced valid ticket is admitted', {}, 'admit'],
  ['a malformed code is rejected', { code: { kind: 'malformed' } }, 'malformed'],
  ['a bad signature is rejected', { code: { kind: 'bad_signature' } }, 'bad_signature'],
  [
    'a token for another venue is wrong_venue',
    { code: token({ venue: 'v2' }), ticket: undefined },
    'wrong_venue',
  ],
  [
    'a bare code the store does not hold is unknown',
    { code: { kind: 'code', ticketId: 'zz' }, ticket: undefined },
    'unknown',
  ],
  ['a bare code of a held ticket is admitted', { code: { kind: 'code', ticketId: 't1' } }, 'admit'],
  ['a revoked ticket is rejected', { ticket: ticket({ status: 'revoked' }) }, 'revoked'],
  ['revoked wins over already used', { ticket: ticket({ status: 'revoked' }), presence: inside }, 'revoked'],
  ['before valid_from is not_yet_valid', { ticket: ticket({ valid_from: NOW + 1 }) }, 'not_yet_valid'],
  ['at valid_until is expired', { ticket: ticket({ valid_until: NOW }) }, 'expired'],
  ['a gate not in the list is wrong_gate', { ticket: ticket({ gates: ['south'] }) }, 'wrong_gate'],
  ['a gate in the list is admitted', { ticket: ticket({ gates: ['south', 'north'] }) }, 'admit'],
  ['a second entry is already_used', { presence: inside }, 'already_used'],
  ['re-entry after exit is refused without the re-entry rule', { presence: outside }, 'already_used'],
  ['re-entry after exit is admitted with the re-entry rule', { presence: outside, reentry: true }, 'admit'],
  [
    're-entry while inside is refused even with the rule',
    { presence: inside, reentry: true },
    'already_used',
  ],
  ['an exit of a ticket inside is admitted', { presence: inside, direction: 'out' }, 'admit'],
  ['an exit of a ticket never admitted is not_inside', { direction: 'out' }, 'not_inside'],
  ['an unsynced ticket with a valid token is admitted and flagged', { ticket: undefined }, 'admit', true],
  [
    'an unsynced token outside its window is expired',
    { ticket: undefined, code: token({ valid_until: NOW - 1 }) },
    'expired',
  ],
  [
    'an unsynced token for another gate is wrong_gate',
    { ticket: undefined, code: token({ gates: ['south'] }) },
    'wrong_gate',
  ],
  ['the stored window wins over the token window', { code: token({ valid_until: NOW - 1 }) }, 'admit'],
];

for (const [name, extra, expected, unsynced] of table) {
  test(`scan decision: ${name}`, () => {
    const out = decideScan(input(extra));
    assert.equal(out.reason ?? out.decision, expected);
    assert.equal(out.decision, expected === 'admit' ? 'admit' : 'reject');
    assert.equal(out.unsyncedTicket, unsynced === true);
  });
}
