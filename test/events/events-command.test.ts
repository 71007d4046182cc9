import { Command } from 'commander';
import { afterEach, describe, expect, it } from 'vitest';
import { followEvents, registerEventsCommand, renderEvent } from '../../src/cli/events-command';
import { AuditEvent } from '../../src/events/audit-event';
import { EventFollower } from '../../src/events/event-follower';
import { EventHub } from '../../src/events/event-hub';
import { waitFor } from '../helpers/agent-process';
import { range, sampleDrafts, ServerFixture } from './fixtures';

/** Captures what `sigil events` prints, as parsed JSON lines and stderr text. */
class Output {
  stdoutText = '';
  stderrText = '';
  readonly stdout = { write: (text: string) => (this.stdoutText += text) };
  readonly stderr = { write: (text: string) => (this.stderrText += text) };

  get events(): AuditEvent[] {
    return this.stdoutText
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as AuditEvent);
  }
}

function publish(hub: EventHub, count: number): void {
  for (let i = 0; i < count; i++) hub.publish({ type: 'agent', ktimeNs: '0', message: `event ${i}` });
}

describe('sigil events', () => {
  let fixture: ServerFixture;
  let follower: EventFollower | undefined;

  afterEach(async () => {
    follower?.stop();
    follower = undefined;
    await fixture.close();
  });

  function follow(output: Output, extra: { sinceSeq?: number } = {}): EventFollower {
    return followEvents(
      { socket: fixture.socket, type: [], action: [], result: [], format: 'json', ...extra },
      output,
      (error) => {
        throw error;
      },
    );
  }

  it('resumes after a server restart without duplicates', async () => {
    fixture = await new ServerFixture(new EventHub('cli-node')).start();
    const output = new Output();
    follower = follow(output);
    await waitFor('the first connection', () => (follower?.position.nextSeq === 1 ? true : undefined));
    publish(fixture.hub, 3);
    await waitFor('3 events', () => (output.events.length === 3 ? true : undefined));

    // The agent's gRPC service restarts with the same hub; events published meanwhile wait in its buffer.
    await fixture.server.stop();
    publish(fixture.hub, 2);
    await waitFor('a reconnect attempt', () => (output.stderrText.includes('reconnect attempt') ? true : undefined));
    await fixture.restart();
    publish(fixture.hub, 1);
    await waitFor('6 events', () => (output.events.length === 6 ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, 100));

    expect(output.events.map((event) => event.seq)).toEqual(range(1, 6));
    expect(output.stderrText).toContain('from sequence number 4');
  });

  it('shows an agent restart as a loss event and follows the new run', async () => {
    fixture = await new ServerFixture(new EventHub('cli-node')).start();
    const output = new Output();
    follower = follow(output);
    await waitFor('the first connection', () => (follower?.position.nextSeq === 1 ? true : undefined));
    publish(fixture.hub, 2);
    await waitFor('2 events', () => (output.events.length === 2 ? true : undefined));
    const oldRun = fixture.hub.runId;

    await fixture.server.stop();
    const newHub = new EventHub('cli-node');
    publish(newHub, 3);
    await fixture.restart(newHub);
    await waitFor('the new run', () => (output.events.length === 6 ? true : undefined));

    const [first, second, marker, ...rest] = output.events;
    expect([first.seq, second.seq]).toEqual([1, 2]);
    expect(first.runId).toBe(oldRun);
    expect(marker.loss?.where).toBe('agent-restart');
    expect(rest.map((event) => event.seq)).toEqual([1, 2, 3]);
    expect(rest.every((event) => event.runId === newHub.runId)).toBe(true);
    expect(output.stderrText).toContain(`connected to a new agent run ${newHub.runId}`);
  });

  it('starts from --since-seq', async () => {
    fixture = await new ServerFixture(new EventHub('cli-node')).start();
    publish(fixture.hub, 5);
    const output = new Output();
    follower = follow(output, { sinceSeq: 3 });
    await waitFor('3 events', () => (output.events.length === 3 ? true : undefined));
    expect(output.events.map((event) => event.seq)).toEqual([3, 4, 5]);
  });

  it('stops on an invalid request instead of retrying', async () => {
    fixture = await new ServerFixture(new EventHub('cli-node')).start();
    publish(fixture.hub, 1);
    const output = new Output();
    let fatal: Error | undefined;
    follower = followEvents(
      { socket: fixture.socket, type: [], action: [], result: [], format: 'json', sinceSeq: 10 },
      output,
      (error) => (fatal = error),
    );
    await waitFor('the fatal error', () => fatal);
    expect(output.stderrText).toContain('since_seq 10');
    expect(output.stderrText).not.toContain('reconnect');
  });
});

describe('sigil events options', () => {
  function parse(args: string[]): Promise<unknown> {
    const program = new Command('sigil').exitOverride();
    registerEventsCommand(program).exitOverride().action(() => undefined);
    program.configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
    return program.parseAsync(['node', 'sigil', 'events', ...args]);
  }

  it.each([
    [['--type', 'fork'], /expected one of exec, exit/],
    [['--action', 'deny'], /expected one of allow, audit/],
    [['--result', 'blocked'], /expected one of allowed, denied/],
    [['--min-severity', 'severe'], /Allowed choices are info, low, medium, high, critical/],
    [['--since-seq', '0'], /sequence number of 1 or more/],
    [['--since-seq', 'x'], /sequence number of 1 or more/],
    [['--subject', 'web'], /expected a SPIFFE ID/],
    [['--format', 'xml'], /Allowed choices are json, ocsf, table/],
  ])('rejects %j', async (args, message) => {
    await expect(parse(args)).rejects.toThrow(message);
  });

  it('accepts every filter option', async () => {
    await expect(
      parse([
        '--type', 'connect', '--type', 'file', '--action', 'block', '--result', 'denied',
        '--min-severity', 'high', '--since-seq', '42', '--subject', 'spiffe://example.org/ns',
        '--subject-id', 'spiffe://example.org/ns/web', '--format', 'ocsf',
      ]),
    ).resolves.toBeDefined();
  });

  it.each(['json', 'ocsf', 'table'] as const)('renders every sample event as one %s line', (format) => {
    const hub = new EventHub('render-node');
    for (const draft of sampleDrafts()) {
      const line = renderEvent(hub.publish(draft), format);
      expect(line.endsWith('\n')).toBe(true);
      expect(line.slice(0, -1)).not.toContain('\n');
    }
  });

  it.each(['json', 'ocsf', 'table'] as const)('keeps control characters out of a %s line', (format) => {
    const hub = new EventHub('render-node');
    // A file name may hold any byte but '/' and NUL: a forged second row, a terminal escape, a bidi override.
    const hostile = '/tmp/x\n00:00:00.000 #1 info     exec    forged\r\u001b[2J\u009b31m\u202eexe\u2028';
    for (const draft of sampleDrafts()) {
      if (draft.process) draft.process = { ...draft.process, executable: hostile, comm: 'c\u001b' };
      if (draft.object) draft.object = { ...draft.object, path: hostile };
      draft.message = hostile;
      const line = renderEvent(hub.publish(draft), format).slice(0, -1);
      expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
      expect(line).not.toMatch(/[\u2028\u2029\u202a-\u202e\u2066-\u2069]/);
      if (format === 'json') expect(JSON.parse(line).message).toBe(hostile);
    }
  });
});
