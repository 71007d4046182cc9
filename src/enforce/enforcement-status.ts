/**
 * The enforcement report of a running agent: which enforcer applies each rule
 * kind and what happens to each rule (src/policy/enforcement-report.ts). The
 * agent logs it and writes it to enforcement.json in its state directory,
 * where `sigil status` reads it.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  describeEnforcement,
  EnforcementReport,
  KindEnforcers,
  ruleEnforcement,
} from '../policy/enforcement-report';
import { Policy } from '../policy/types';

const REPORT_FILE = 'enforcement.json';

/**
 * Returns the enforcers of each rule kind for the exec and file enforcer the agent runs, and
 * whether BPF LSM or the cgroup programs decide connects.
 */
export function kindEnforcers(
  pathEnforcer: 'bpf-lsm' | 'tracepoint-kill' | null,
  lsmConnect = false,
  appArmor = false,
): KindEnforcers {
  return {
    egress: lsmConnect ? 'bpf-lsm' : 'cgroup-sock',
    ingress: null,
    process: pathEnforcer,
    file: pathEnforcer,
    capability: appArmor ? 'apparmor' : null,
  };
}

/**
 * Logs which rules the node enforces, per kind, and writes the full report to
 * stateDir/enforcement.json (replaced atomically). A failed write is logged,
 * not thrown: the report describes enforcement and is no part of it.
 */
export function publishEnforcementReport(
  log: Logger,
  stateDir: string,
  policies: readonly Policy[],
  kinds: KindEnforcers,
  generation: number,
): EnforcementReport {
  const rules = ruleEnforcement(policies, kinds);
  const report: EnforcementReport = { time: new Date().toISOString(), generation, kinds, rules };
  for (const line of describeEnforcement(kinds, rules)) log.info({ generation }, line);
  const path = join(stateDir, REPORT_FILE);
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    writeFileSync(`${path}.tmp`, `${JSON.stringify(report, null, 2)}\n`);
    renameSync(`${path}.tmp`, path);
  } catch (error) {
    log.error({ err: error, path }, 'write enforcement report failed');
  }
  return report;
}

/** Returns the report an agent wrote to stateDir, or null when there is none. Throws on invalid JSON. */
export function readEnforcementReport(stateDir: string): EnforcementReport | null {
  const path = join(stateDir, REPORT_FILE);
  if (!existsSync(path)) return null;
  return JSON.parse(readFileSync(path, 'utf8')) as EnforcementReport;
}

/** Removes the report, as `sigil uninstall` does. */
export function removeEnforcementReport(stateDir: string): void {
  rmSync(join(stateDir, REPORT_FILE), { force: true });
}
