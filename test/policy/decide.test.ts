import { describe, expect, it } from 'vitest';
import { ConnectQuery, Decision, decideConnect, explainConnect } from '../../src/policy/decide';
import { policySet } from './policy-builder';

const WEB = 'spiffe://a.org/ns/web';
const CANARY = 'spiffe://a.org/ns/web/canary';
const API = 'spiffe://a.org/api';
const BATCH = 'spiffe://a.org/batch';

const SET = policySet([
  {
    name: 'web',
    subject: WEB,
    egress: [
      { name: 'api-allow', action: 'Allow', to: { spiffeId: API }, ports: [8080], protocol: 'TCP' },
      { name: 'dns', action: 'Allow', to: { cidrs: ['10.0.0.53'] }, ports: [53], protocol: 'UDP' },
      { name: 'lan-audit', action: 'Audit', to: { cidrs: ['10.0.0.0/8'] } },
      { name: 'bad-host', action: 'Block', to: { cidrs: ['10.6.6.6'] } },
      { name: 'v6-allow', action: 'Allow', to: { cidrs: ['2001:db8::/32'] }, ports: ['443'] },
    ],
  },
  {
    name: 'web-tree',
    subject: 'prefix:spiffe://a.org/ns/web',
    egressPosture: 'Audit',
    egress: [
      { name: 'metrics', action: 'Allow', ports: [9090] },
      {
        name: 'api-audit',
        action: 'Audit',
        to: { spiffeIdPrefix: 'spiffe://a.org' },
        ports: [8080],
      },
    ],
  },
  {
    name: 'api',
    subject: API,
    egressPosture: 'Audit',
    egress: [
      {
        name: 'db',
        action: 'Allow',
        to: { cidrs: ['192.168.1.10'] },
        ports: [5432],
        protocol: 'TCP',
      },
    ],
  },
  { name: 'batch', subject: BATCH, egress: [{ name: 'smtp', action: 'Block', ports: [25] }] },
]);

const query = (
  subject: string | null,
  peer: string | null,
  address: string,
  port: number,
  protocol: 'TCP' | 'UDP' = 'TCP',
): ConnectQuery => ({ subject, peer, address, port, protocol });

const rule = (action: Decision['action'], policy: string, name: string): Decision => ({
  action,
  reason: 'rule',
  denied: action === 'Block',
  policy,
  rule: name,
});
const posture = (action: 'Block' | 'Audit'): Decision => ({
  action,
  reason: 'posture',
  denied: action === 'Block',
});
const NO_POLICY: Decision = { action: 'None', reason: 'no-policy', denied: false };

describe('decideConnect', () => {
  it.each<[string, ConnectQuery, Decision]>([
    [
      'peer Allow loses to CIDR Audit',
      query(WEB, API, '10.0.0.1', 8080),
      rule('Audit', 'web', 'lan-audit'),
    ],
    [
      'peer Allow loses to peer prefix Audit',
      query(WEB, API, '127.0.0.1', 8080),
      rule('Audit', 'web-tree', 'api-audit'),
    ],
    ['peer rule needs the peer', query(WEB, null, '127.0.0.1', 8080), posture('Block')],
    [
      'peer rule checks the protocol',
      query(WEB, API, '127.0.0.1', 8080, 'UDP'),
      rule('Audit', 'web-tree', 'api-audit'),
    ],
    [
      'host Allow loses to network Audit',
      query(WEB, null, '10.0.0.53', 53, 'UDP'),
      rule('Audit', 'web', 'lan-audit'),
    ],
    ['Block wins', query(WEB, null, '10.6.6.6', 80), rule('Block', 'web', 'bad-host')],
    [
      'IPv4-mapped address matches IPv4 CIDR',
      query(WEB, null, '::ffff:10.6.6.6', 80),
      rule('Block', 'web', 'bad-host'),
    ],
    ['IPv6 CIDR with port', query(WEB, null, '2001:db8::1', 443), rule('Allow', 'web', 'v6-allow')],
    ['IPv6 CIDR on another port', query(WEB, null, '2001:db8::1', 80), posture('Block')],
    ['Block posture wins over Audit', query(WEB, null, '8.8.8.8', 53, 'UDP'), posture('Block')],
    [
      'rule without destination',
      query(WEB, null, '1.2.3.4', 9090),
      rule('Allow', 'web-tree', 'metrics'),
    ],
    ['prefix subject posture', query(CANARY, null, '8.8.8.8', 80), posture('Audit')],
    [
      'prefix subject peer rule',
      query(CANARY, API, '127.0.0.1', 8080),
      rule('Audit', 'web-tree', 'api-audit'),
    ],
    [
      'prefix stops at segment boundary',
      query('spiffe://a.org/ns/webx', API, '10.6.6.6', 8080),
      NO_POLICY,
    ],
    ['exact subject Allow', query(API, null, '192.168.1.10', 5432), rule('Allow', 'api', 'db')],
    [
      'protocol mismatch falls to posture',
      query(API, null, '192.168.1.10', 5432, 'UDP'),
      posture('Audit'),
    ],
    [
      'Block rule without Allow rules',
      query(BATCH, null, '1.2.3.4', 25),
      rule('Block', 'batch', 'smtp'),
    ],
    ['no Allow rules means no posture', query(BATCH, null, '1.2.3.4', 80), NO_POLICY],
    ['no subject', query(null, API, '10.6.6.6', 8080), NO_POLICY],
    ['unknown subject', query('spiffe://z.org/x', null, '10.6.6.6', 80), NO_POLICY],
  ])('%s', (_name, connect, expected) => {
    expect(decideConnect(SET, connect)).toEqual(expected);
  });

  it.each([
    ['first policy first', ['one', 'two'], 'one'],
    ['order of the set', ['two', 'one'], 'two'],
  ])('breaks ties by %s', (_name, order, winner) => {
    const policies = {
      one: {
        name: 'one',
        subject: WEB,
        egress: [{ name: 'by-cidr', action: 'Allow', to: { cidrs: ['127.0.0.0/8'] } }],
      },
      two: {
        name: 'two',
        subject: WEB,
        egress: [{ name: 'by-peer', action: 'Allow', to: { spiffeId: API } }],
      },
    };
    const set = policySet(order.map((name) => policies[name as 'one' | 'two']));
    const decision = decideConnect(set, query(WEB, API, '127.0.0.1', 80));
    expect(decision.policy).toBe(winner);
    expect(decision.action).toBe('Allow');
  });

  it('breaks ties by rule order within a policy', () => {
    const set = policySet([
      {
        name: 'web',
        subject: WEB,
        egress: [
          { name: 'wide', action: 'Block', to: { cidrs: ['10.0.0.0/8'] } },
          { name: 'narrow', action: 'Block', to: { cidrs: ['10.1.0.0/16'] } },
        ],
      },
    ]);
    expect(decideConnect(set, query(WEB, null, '10.1.0.1', 80)).rule).toBe('wide');
  });

  // Linux sends these connects to loopback, and the connect programs decide on loopback.
  it.each([
    ['0.0.0.0', 'v4-loopback'],
    ['::ffff:0.0.0.0', 'v4-loopback'],
    ['::', 'v6-loopback'],
  ])('decides a connect to %s as loopback', (address, rule) => {
    const set = policySet([
      {
        name: 'web',
        subject: WEB,
        egress: [
          { name: 'unspecified', action: 'Allow', to: { cidrs: ['0.0.0.0/32', '::/128'] } },
          { name: 'v4-loopback', action: 'Block', to: { cidrs: ['127.0.0.1/32'] } },
          { name: 'v6-loopback', action: 'Block', to: { cidrs: ['::1/128'] } },
        ],
      },
    ]);
    const decision = decideConnect(set, query(WEB, null, address, 80));
    expect(decision.rule).toBe(rule);
    expect(decision.denied).toBe(true);
  });

  it.each([
    [query(WEB, null, '10.0.0', 80), 'address "10.0.0" is not IPv4 or IPv6'],
    [query(WEB, null, '10.0.0.1', 70000), 'port 70000 is not an integer from 0 to 65535'],
    [query(WEB, null, '10.0.0.1', 1.5), 'port 1.5 is not an integer'],
    [
      { ...query(WEB, null, '10.0.0.1', 80), protocol: 'SCTP' as 'TCP' },
      'protocol "SCTP" is not TCP or UDP',
    ],
    [query('web', null, '10.0.0.1', 80), 'invalid connect query: subject: invalid SPIFFE ID "web"'],
    [query(WEB, 'spiffe://a/', '10.0.0.1', 80), 'invalid connect query: peer: invalid SPIFFE ID'],
  ])('rejects an invalid query %#', (connect, message) => {
    expect(() => decideConnect(SET, connect)).toThrow(message);
  });
});

describe('explainConnect', () => {
  it('lists every matching rule', () => {
    const explanation = explainConnect(SET, query(WEB, API, '10.0.0.1', 8080));
    expect(explanation.matches.map((match) => `${match.policy}/${match.rule}`)).toEqual([
      'web/api-allow',
      'web/lan-audit',
      'web-tree/api-audit',
    ]);
    expect(explanation.matches[0]).toMatchObject({
      action: 'Allow',
      file: 'policies.yaml',
      line: 9,
    });
    expect(explanation.policies).toEqual(['web', 'web-tree']);
    expect(explanation.hasEgressAllow).toBe(true);
    expect(explanation.egressPosture).toBe('Block');
    expect(explanation.decision).toEqual(rule('Audit', 'web', 'lan-audit'));
  });

  it('reports no posture without policies', () => {
    const explanation = explainConnect(SET, query(null, null, '10.0.0.1', 80));
    expect(explanation.policies).toEqual([]);
    expect(explanation.egressPosture).toBeNull();
    expect(explanation.matches).toEqual([]);
  });
});
