import { stringify } from 'yaml';
import { generateProfiles, ProfileGeneration } from '../../src/apparmor/generate';
import { parseRegistration, Registration } from '../../src/identity/registration';
import { parsePolicySet } from '../../src/policy/loader';
import { PolicySet } from '../../src/policy/types';

export const WEB = 'spiffe://example.org/web';
export const API = 'spiffe://example.org/api';

/** Returns the YAML text of one policy document with the given `spec` fields. */
export function policyDocument(name: string, spec: Record<string, unknown>): string {
  return stringify({
    apiVersion: 'sigil.dev/v1alpha1',
    kind: 'IdentityPolicy',
    metadata: { name },
    spec,
  });
}

/** Loads policy documents as one file named `policies.yaml`. */
export function policies(...documents: string[]): PolicySet {
  return parsePolicySet(documents.join('---\n'), 'policies.yaml');
}

/** Builds a registration of `spiffeId -> selectors` entries, named `registration.yaml`. */
export function registration(entries: Record<string, string[]>): Registration {
  const text = stringify({
    apiVersion: 'sigil.dev/v1alpha1',
    kind: 'Registration',
    entries: Object.entries(entries).map(([spiffeId, selectors]) => ({ spiffeId, selectors })),
  });
  return parseRegistration(text, 'registration.yaml');
}

/** Generates the profiles of one subject's spec, attached to /usr/bin/web. */
export function generateFor(spec: Record<string, unknown>, subject = WEB): ProfileGeneration {
  return generateProfiles(
    policies(policyDocument('web', { subject: { spiffeId: subject }, ...spec })),
    registration({ [subject]: ['unix:path:/usr/bin/web'] }),
  );
}

/** Returns the rule lines of a profile text: no comments, no blank lines, trimmed. */
export function ruleLines(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
}
