import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentState, AuditEvent, EVENT_TYPES, FileOperation } from '../../src/events/audit-event';
import { EventHub } from '../../src/events/event-hub';
import { OCSF_CLASS_BY_TYPE, OCSF_VERSION, OcsfEvent, toOcsf } from '../../src/events/ocsf';
import { JsonSchemaValidator } from './json-schema';
import { API, process, sampleDrafts, WEB } from './fixtures';

const SCHEMA_PATH = join(__dirname, '..', '..', 'src', 'events', 'ocsf-1.3.0.schema.json');
const validator = new JsonSchemaValidator(JSON.parse(readFileSync(SCHEMA_PATH, 'utf8')) as Record<string, unknown>);

const hub = new EventHub('ocsf-node', { runId: 'run-1' });
const samples = sampleDrafts().map((draft) => hub.publish(draft));

function sample(predicate: (event: AuditEvent) => boolean): AuditEvent {
  const event = samples.find(predicate);
  if (!event) throw new Error('no sample event matches');
  return event;
}

function get(object: OcsfEvent, path: string): unknown {
  return path.split('.').reduce<unknown>((node, key) => (node as Record<string, unknown> | undefined)?.[key], object);
}

const FILE_OPERATIONS: FileOperation[] = [
  'open',
  'create',
  'read',
  'write',
  'unlink',
  'rename',
  'chmod',
  'chown',
  'mount',
  'unmount',
];

/** Returns every sample, plus a file event per operation, an agent event per state and a loss event per kind. */
function allVariants(): AuditEvent[] {
  const variants = [...samples];
  const fileSample = sample((event) => event.type === 'file');
  for (const operation of FILE_OPERATIONS) {
    variants.push({ ...fileSample, object: { path: `/var/lib/app/${operation}`, operation } });
  }
  const agentSample = sample((event) => event.type === 'agent');
  for (const state of ['started', 'stopping', 'reloaded', 'rejected', 'degraded', 'recovered'] as const) {
    variants.push({ ...agentSample, agent: { state, version: '0.1.0', identities: 1, rules: 2 } });
  }
  for (const where of ['kernel-ringbuf', 'client-queue', 'decode', 'replay-gap', 'agent-restart'] as const) {
    variants.push({ ...sample((event) => event.type === 'loss'), seq: 0, loss: { where, count: 3 } });
  }
  return variants;
}

describe('OCSF mapping', () => {
  it('covers every event type with a sample', () => {
    expect(new Set(samples.map((event) => event.type))).toEqual(new Set(EVENT_TYPES));
  });

  it.each(allVariants().map((event) => [`${event.type} #${event.seq} ${JSON.stringify(event.object ?? event.agent ?? event.loss ?? event.result ?? '')}`, event] as const))(
    '%s validates against the schema',
    (_, event) => {
      expect(validator.validate(toOcsf(event))).toEqual([]);
    },
  );

  it.each(samples.map((event) => [event.type, event] as const))('%s has the class of its type', (type, event) => {
    const ocsf = toOcsf(event);
    const expected = OCSF_CLASS_BY_TYPE[type];
    expect(ocsf.class_uid).toBe(expected.classUid);
    expect(ocsf.category_uid).toBe(expected.categoryUid);
    expect(ocsf.type_uid).toBe(expected.classUid * 100 + (ocsf.activity_id as number));
  });

  it('uses the classes documented for each type', () => {
    const classes = Object.fromEntries(EVENT_TYPES.map((type) => [type, OCSF_CLASS_BY_TYPE[type].classUid]));
    expect(classes).toEqual({
      exec: 1007,
      exit: 1007,
      file: 1001,
      connect: 4001,
      accept: 4001,
      bind: 4001,
      policy: 2004,
      loss: 2004,
      agent: 6002,
    });
  });

  it('fills metadata, time and severity', () => {
    const event = sample((e) => e.type === 'connect' && e.result === 'denied');
    const ocsf = toOcsf(event, { productVersion: '9.9.9', vendorName: 'Example' });
    expect(ocsf.metadata).toMatchObject({
      version: OCSF_VERSION,
      product: { name: 'Sigil', vendor_name: 'Example', version: '9.9.9' },
      uid: `run-1-${event.seq}`,
      sequence: event.seq,
      profiles: ['host', 'security_control'],
    });
    expect(ocsf.time).toBe(Date.parse(event.time));
    expect(ocsf.severity_id).toBe(4);
    expect(ocsf.severity).toBe('High');
  });

  it('maps an exec to a launch with the parent as actor', () => {
    const ocsf = toOcsf(sample((e) => e.type === 'exec'));
    expect(ocsf.activity_id).toBe(1);
    expect(get(ocsf, 'process.pid')).toBe(100);
    expect(get(ocsf, 'process.cmd_line')).toBe("curl -s 'http://api:8080/a b'");
    expect(get(ocsf, 'process.file.path')).toBe('/usr/bin/curl');
    expect(get(ocsf, 'process.parent_process.pid')).toBe(90);
    expect(get(ocsf, 'process.parent_process.parent_process.name')).toBe('systemd');
    expect(get(ocsf, 'actor.process.pid')).toBe(90);
    expect(get(ocsf, 'container.uid')).toBe('3f2a9c');
    expect(get(ocsf, 'unmapped.sigil.subject_spiffe_id')).toBe(WEB);
    expect(ocsf.action_id).toBeUndefined();
  });

  it('maps an exit to a terminate with its exit code', () => {
    const ocsf = toOcsf(sample((e) => e.type === 'exit'));
    expect(ocsf.activity_id).toBe(2);
    expect(ocsf.exit_code).toBe(0);
    expect(get(ocsf, 'actor.process.pid')).toBe(300);
  });

  it('maps a blocked connect to a refused outbound connection', () => {
    const ocsf = toOcsf(sample((e) => e.type === 'connect' && e.result === 'denied'));
    expect(ocsf).toMatchObject({
      activity_id: 5,
      action_id: 2,
      disposition_id: 2,
      status_id: 2,
      status_code: 'EPERM',
      dst_endpoint: { ip: '2001:db8::5', port: 53 },
      src_endpoint: { hostname: 'ocsf-node' },
      connection_info: { direction_id: 2, protocol_name: 'udp', protocol_num: 17, protocol_ver_id: 6 },
    });
    expect(get(ocsf, 'unmapped.sigil.policy.tags')).toEqual(['T1071.004']);
  });

  it('maps an audited accept to an inbound connection that was logged', () => {
    const ocsf = toOcsf(sample((e) => e.type === 'accept'));
    expect(ocsf).toMatchObject({
      activity_id: 1,
      action_id: 1,
      disposition_id: 17,
      src_endpoint: { ip: '10.0.0.9', port: 51514 },
      dst_endpoint: { ip: '10.0.0.7', port: 8080, hostname: 'ocsf-node' },
      connection_info: { direction_id: 1 },
    });
    expect(get(ocsf, 'unmapped.sigil.peer_spiffe_id')).toBe(WEB);
    expect(get(ocsf, 'unmapped.sigil.subject_spiffe_id')).toBe(API);
  });

  it('maps an accept with an unenforced Block to Logged', () => {
    const ocsf = toOcsf({ ...sample((e) => e.type === 'accept'), action: 'block' });
    expect(ocsf).toMatchObject({ activity_id: 1, action_id: 1, disposition_id: 17, status_id: 1 });
    expect(validator.validate(ocsf)).toEqual([]);
  });

  it('maps a bind to an Other network activity named Bind', () => {
    const ocsf = toOcsf(sample((e) => e.type === 'bind'));
    expect(ocsf).toMatchObject({ activity_id: 99, activity_name: 'Bind', src_endpoint: { ip: '0.0.0.0', port: 8080 } });
    expect(ocsf.dst_endpoint).toBeUndefined();
  });

  it.each([
    ['open', 14],
    ['create', 1],
    ['write', 3],
    ['unlink', 4],
    ['rename', 5],
    ['chmod', 7],
    ['mount', 12],
  ] as const)('maps file operation %s to activity %i', (operation, activityId) => {
    const event = { ...sample((e) => e.type === 'file'), object: { path: '/etc/x', operation } };
    expect(toOcsf(event).activity_id).toBe(activityId);
  });

  it('maps a rename target to file_result', () => {
    const ocsf = toOcsf(sample((e) => e.type === 'file' && e.object?.operation === 'rename'));
    expect(get(ocsf, 'file.path')).toBe('/tmp/a');
    expect(get(ocsf, 'file_result.path')).toBe('/tmp/b');
  });

  it('maps a policy event to a detection finding with the rule as analytic', () => {
    const ocsf = toOcsf(sample((e) => e.type === 'policy'));
    expect(get(ocsf, 'finding_info.analytic')).toEqual({ name: 'no-netcat', type_id: 1, type: 'Rule' });
    expect(get(ocsf, 'finding_info.types')).toEqual(['Policy Decision', 'T1059']);
    expect(ocsf.disposition_id).toBe(2);
  });

  it('maps a loss event to a detection finding', () => {
    const ocsf = toOcsf(sample((e) => e.type === 'loss'));
    expect(get(ocsf, 'finding_info.title')).toBe('Audit events lost (kernel-ringbuf)');
    expect(get(ocsf, 'unmapped.sigil.loss.count')).toBe(17);
    expect(ocsf.severity_id).toBe(4);
  });

  it('gives per-client loss events a unique finding id and no sequence', () => {
    const loss = { ...sample((e) => e.type === 'loss'), seq: 0 };
    const first = toOcsf(loss);
    expect(get(first, 'metadata.sequence')).toBeUndefined();
    expect(get(first, 'finding_info.uid')).not.toBe(get(toOcsf(loss), 'finding_info.uid'));
  });

  it('maps agent states to lifecycle activities', () => {
    const agent = sample((e) => e.type === 'agent');
    const activity = (state: AgentState) =>
      toOcsf({ ...agent, agent: { state, version: '0.1.0', identities: 0, rules: 0 } }).activity_id;
    const states: AgentState[] = ['started', 'stopping', 'reloaded', 'rejected', 'degraded', 'recovered'];
    expect(states.map(activity)).toEqual([3, 4, 99, 99, 99, 99]);
    expect(get(toOcsf(agent), 'app.name')).toBe('Sigil');
  });
});

describe('OCSF schema', () => {
  const valid = toOcsf(samples[1]);

  it.each([
    ['metadata', 'missing required property metadata'],
    ['class_uid', 'missing required property class_uid'],
    ['time', 'missing required property time'],
  ])('rejects an event without %s', (attribute, message) => {
    const broken: OcsfEvent = { ...valid };
    delete broken[attribute];
    expect(validator.validate(broken).join('\n')).toContain(message);
  });

  it('rejects a network event without endpoints', () => {
    const broken: OcsfEvent = { ...valid };
    delete broken.src_endpoint;
    delete broken.dst_endpoint;
    expect(validator.validate(broken).join('\n')).toContain('anyOf');
  });

  it('rejects a process event without actor', () => {
    const broken = toOcsf(sample((e) => e.type === 'exec'));
    delete broken.actor;
    expect(validator.validate(broken)).toEqual(['$: missing required property actor']);
  });

  it('rejects a type_uid that does not match the class', () => {
    expect(validator.validate({ ...valid, type_uid: 100701 }).join('\n')).toContain('$.type_uid');
  });

  it('rejects a file without type_id', () => {
    const broken = toOcsf({ ...sample((e) => e.type === 'file'), process: process(5) });
    delete (broken.file as Record<string, unknown>).type_id;
    expect(validator.validate(broken)).toEqual(['$.file: missing required property type_id']);
  });
});
