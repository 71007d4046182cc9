/**
 * The parts of the exec and file rule enforcers (BPF LSM and tracepoint-kill)
 * that do not depend on how they decide. An enforcer loads its object on the
 * main object's pinned maps, attaches its programs with pinned links, keeps
 * the rule tables of recent generations, and decodes its decision records
 * from the shared ring buffer.
 */
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { decodeRecord, KernelRecord, MalformedRecord } from '../kernel/codec';
import { RuleSetHooks } from '../kernel/datapath';
import { DecisionReason, recordHeaderLayout } from '../kernel/layout';
import { PathDecision } from '../kernel/lsm-layout';
import { BpfObject, Link } from '../kernel/native';
import { LsmPolicyCompilation } from '../policy/compile-lsm';
import { PolicyRef } from '../events/audit-event';

// Rule tables kept for decoding records of generations that are no longer active, as the agent keeps egress ones.
const KEPT_GENERATIONS = 8;
const FRAME_HEADER_BYTES = 8;
const RECORD_TYPE_OFFSET = recordHeaderLayout.offsetOf('type');

/** Options that both exec and file rule enforcers take. */
export interface PathRuleEnforcerOptions {
  /** bpffs directory that Datapath.load pinned its maps under (pinDir/maps) and its links under (pinDir/links). */
  pinDir: string;
  /** Path of the enforcer's BPF object, by default the build output. */
  objectPath?: string;
  logger: Logger;
  /** Returns the SPIFFE ID of an identity id, or null for id 0 and unknown ids. */
  spiffeIdOf(id: number): string | null;
  /** Returns the executable the agent attested for a process, or null. */
  executableOf(tgid: number): string | null;
}

/** Rule table and posture sources of one generation. */
export type GenerationTables = Pick<LsmPolicyCompilation, 'rules' | 'policiesBySubject'>;

/** A decision record of an enforcer's object, identified by its type field. */
export type DecisionRecord = PathDecision & { type: string };

/** Decoder of the decision records of one object. */
export interface DecisionDecoder<R extends DecisionRecord> {
  /** Record types in the header that this decoder reads; codec.ts decodes every other type. */
  recordTypes: readonly number[];
  /** Decodes a record of one of recordTypes, and throws RangeError for a malformed one. */
  decode(buffer: Buffer, at: number, length: number): R | null;
  /** The value of R['type'] for exec decisions; every other value is a file decision. */
  execType: R['type'];
}

/** An object with exec and file programs, its pinned links and the rule tables of recent generations. */
export abstract class PathRuleEnforcer<
  R extends DecisionRecord,
  O extends PathRuleEnforcerOptions,
> {
  protected readonly links: Link[] = [];
  protected readonly log: Logger;
  private readonly tables = new Map<number, GenerationTables>();

  protected constructor(
    protected readonly object: BpfObject,
    protected readonly options: O,
    private readonly decoder: DecisionDecoder<R>,
  ) {
    this.log = options.logger;
  }

  /** Runs the setup steps of a new enforcer, and closes it when one throws. */
  protected started(steps: () => void): this {
    try {
      steps();
    } catch (error) {
      this.close();
      throw error;
    }
    return this;
  }

  /**
   * Attaches each program of programs with attachOne and pins its link under
   * pinDir/links as `<program>-<pid>`, because bpffs rejects '.' in names.
   * attachOne returns null for a program to skip. The links that an earlier
   * agent pinned for any program of known are removed only after this
   * agent's links are attached, so enforcement has no gap.
   */
  protected attachPinned(
    known: readonly string[],
    programs: readonly string[],
    attachOne: (program: string) => Link | null,
    message: string,
  ): void {
    const linkDirectory = join(this.options.pinDir, 'links');
    const earlierPins = readdirSync(linkDirectory)
      .filter((name) => known.some((program) => name.startsWith(`${program}-`)))
      .map((name) => join(linkDirectory, name));
    const attached: string[] = [];
    for (const program of programs) {
      const link = attachOne(program);
      if (!link) continue;
      this.links.push(link);
      link.pin(join(linkDirectory, `${program}-${process.pid}`));
      attached.push(program);
    }
    for (const pin of earlierPins) rmSync(pin, { force: true });
    this.log.info({ programs: attached, replaced: earlierPins.length }, message);
  }

  /**
   * Returns the hooks that publish a generation's rules before Datapath.applyRuleSet
   * switches to it, and afterwards keep its tables and retire the generation it
   * replaced. A failed retire is logged with retireFailed and does not throw.
   */
  protected generationHooks(
    tables: GenerationTables,
    publish: (generation: number) => void,
    retire: (generation: number) => void,
    retireFailed: string,
  ): RuleSetHooks {
    return {
      beforeSwitch: publish,
      afterSwitch: (generation, previous) => {
        this.tables.set(generation, {
          rules: tables.rules,
          policiesBySubject: tables.policiesBySubject,
        });
        this.tables.delete(generation - KEPT_GENERATIONS);
        if (previous === 0) return;
        try {
          retire(previous);
        } catch (error) {
          this.log.error({ err: error, generation: previous }, retireFailed);
        }
      },
    };
  }

  /**
   * Decodes a ring-buffer batch (see batchRecords for the framing) like
   * decodeBatch of codec.ts, and also decodes the decision records of this
   * enforcer's object, which codec.ts reports as malformed.
   */
  decodeBatch(batch: Buffer): (KernelRecord | MalformedRecord | R)[] {
    const records: (KernelRecord | MalformedRecord | R)[] = [];
    this.forEachRecord(batch, (record) => records.push(record));
    return records;
  }

  /** Decodes the records of a batch as decodeBatch does, passing each to visit as soon as it is decoded. */
  forEachRecord(batch: Buffer, visit: (record: KernelRecord | MalformedRecord | R) => void): void {
    let at = 0;
    while (at + FRAME_HEADER_BYTES <= batch.length) {
      const length = batch.readUInt32LE(at);
      const start = at + FRAME_HEADER_BYTES;
      if (start + length > batch.length) {
        visit({ type: 'malformed', reason: `frame of ${length} bytes overruns the batch` });
        break;
      }
      visit(this.decodeRecord(batch, start, length));
      at = start + Math.ceil(length / 8) * 8;
    }
  }

  private decodeRecord(
    batch: Buffer,
    at: number,
    length: number,
  ): KernelRecord | MalformedRecord | R {
    if (length < recordHeaderLayout.size) return decodeRecord(batch, at, length);
    const type = batch.readUInt32LE(at + RECORD_TYPE_OFFSET);
    if (!this.decoder.recordTypes.includes(type)) return decodeRecord(batch, at, length);
    try {
      return this.decoder.decode(batch, at, length)!;
    } catch (error) {
      return { type: 'malformed', reason: (error as Error).message };
    }
  }

  /** Names the rule, or the policies whose posture decided, from the generation's tables. */
  protected policyOf(record: R): PolicyRef | undefined {
    const tables = this.tables.get(record.generation);
    if (record.reason === DecisionReason.Rule) {
      const rule = tables?.rules[record.ruleIndex];
      if (!rule) return undefined;
      const policy: PolicyRef = { name: rule.policy, rule: rule.rule, reason: 'rule' };
      if (rule.severity) policy.severity = rule.severity;
      if (rule.tags?.length) policy.tags = [...rule.tags];
      if (rule.message) policy.message = rule.message;
      return policy;
    }
    if (record.reason === DecisionReason.Posture) {
      const names = tables?.policiesBySubject.get(record.subjectId) ?? [];
      const rule = record.type === this.decoder.execType ? 'processPosture' : 'filePosture';
      return { name: names.join(','), rule, reason: 'posture' };
    }
    return undefined;
  }

  /**
   * Releases this process's links and the object. Pinned links stay attached
   * and keep enforcing with the pinned maps after this call.
   */
  close(): void {
    for (const link of this.links.splice(0)) link.destroy();
    this.object.close();
  }
}
