/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Verdict bookkeeping of exec and file-open decisions, shared by the BPF LSM
 * programs (bpf/lsm/) and the tracepoint-kill programs (bpf/tracepoint/).
 */
#ifndef SIGIL_PATH_VERDICT_BPF_H
#define SIGIL_PATH_VERDICT_BPF_H

#include "maps.bpf.h"
#include "sigil_lsm.h"

#define EPERM 1

/* The decision so far: the strongest rule that matched, or the posture. */
struct path_verdict {
	__u32 rule_index;
	__u8 action;		/* enum sigil_action */
	__u8 reason;		/* enum sigil_decision_reason */
	__u8 match;		/* enum sigil_lsm_match */
};

/* Raises verdict to rule when rule is stronger, or equally strong with a lower rule index. */
static __always_inline void raise_verdict(struct path_verdict *verdict,
					  const struct sigil_lsm_verdict *rule, __u8 match)
{
	if (rule->action == SIGIL_ACTION_NONE)
		return;
	if (sigil_outranks(rule->action, rule->rule_index, verdict->action, verdict->rule_index)) {
		verdict->action = rule->action;
		verdict->rule_index = rule->rule_index;
		verdict->reason = SIGIL_REASON_RULE;
		verdict->match = match;
	}
}

/* Raises verdict to other by the same order as raise_verdict. */
static __always_inline void merge_verdict(struct path_verdict *verdict,
					  const struct path_verdict *other)
{
	if (other->action == SIGIL_ACTION_NONE)
		return;
	if (sigil_outranks(other->action, other->rule_index, verdict->action, verdict->rule_index))
		*verdict = *other;
}

/* Fills the fields of a decision record that describe the current process. */
static __always_inline void fill_process_fields(struct sigil_path_decision *decision)
{
	sigil_current_ids(&decision->ppid, &decision->uid, &decision->gid);
	decision->cgroup_id = bpf_get_current_cgroup_id();
}

#endif /* SIGIL_PATH_VERDICT_BPF_H */
