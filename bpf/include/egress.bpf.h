/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The egress decision of a connect(), shared by the cgroup programs
 * (bpf/connect.bpf.c, in sigil.bpf.o) and the BPF LSM program
 * lsm/socket_connect (bpf/lsm/socket.bpf.c, in sigil-lsm.bpf.o). Each program
 * reads the destination and finds the local peer its own way, then calls
 * sigil_decide_connect, so both give the same verdict and write the same
 * SIGIL_RECORD_CONNECT record.
 *
 * The three rule maps belong to the main object: bpf/maps.bpf.c defines
 * them, and the LSM object reuses the main object's pinned maps.
 */
#ifndef SIGIL_EGRESS_BPF_H
#define SIGIL_EGRESS_BPF_H

#include <bpf/bpf_endian.h>
#include "maps.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

/* Generation -> per-subject egress settings of that rule set. */
SIGIL_MAP SIGIL_GENERATION_MAP(BPF_MAP_TYPE_HASH, SIGIL_MAX_SUBJECTS,
			       __u32, struct sigil_subject)
	sigil_subjects SEC(".maps");

/* Generation -> peer rules of that rule set. */
SIGIL_MAP SIGIL_GENERATION_MAP(BPF_MAP_TYPE_HASH, SIGIL_MAX_PEER_KEYS,
			       struct sigil_peer_key, struct sigil_rule_list)
	sigil_peer_rules SEC(".maps");

/* Generation -> CIDR rules of that rule set. */
SIGIL_MAP SIGIL_GENERATION_MAP(BPF_MAP_TYPE_LPM_TRIE, SIGIL_MAX_CIDR_KEYS,
			       struct sigil_cidr_key, struct sigil_rule_list)
	sigil_cidr_rules SEC(".maps");

/* Verdict of the rule maps for one connect. */
struct sigil_egress_verdict {
	__u32 rule_index;
	__u8 action;		/* enum sigil_action */
	__u8 reason;		/* enum sigil_decision_reason */
};

/* Destination of a connect or address of a bind, IPv4 stored IPv4-mapped. */
struct sigil_endpoint {
	__u8 addr[16];
	__u16 port;		/* host byte order */
	__u16 family;		/* AF_INET or AF_INET6 */
	__u8 protocol;		/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 is_v4;		/* 1 for AF_INET and for an IPv4-mapped AF_INET6 address */
};

/* Raises verdict to the strongest rule of list that matches the destination. */
static __always_inline void sigil_scan_rules(const struct sigil_rule_list *list,
					     const struct sigil_endpoint *dst,
					     struct sigil_egress_verdict *verdict)
{
	__u32 count = list->count;

	for (__u32 i = 0; i < SIGIL_RULES_PER_KEY; i++) {
		const struct sigil_rule *rule = &list->rules[i];

		if (i >= count)
			break;
		if (rule->protocol && rule->protocol != dst->protocol)
			continue;
		if (dst->port < rule->port_lo || dst->port > rule->port_hi)
			continue;
		if (sigil_outranks(rule->action, rule->rule_index, verdict->action,
				   verdict->rule_index)) {
			verdict->action = rule->action;
			verdict->rule_index = rule->rule_index;
			verdict->reason = SIGIL_REASON_RULE;
		}
	}
}

/* Applies the rule set of generation gen to a connect from subject to peer at dst. */
static __always_inline void sigil_decide_egress(__u32 gen, __u32 subject, __u32 peer,
						const struct sigil_endpoint *dst,
						struct sigil_egress_verdict *verdict)
{
	struct sigil_cidr_key cidr_key = {};
	struct sigil_peer_key peer_key = {};
	struct sigil_rule_list *list;
	struct sigil_subject *settings;
	void *subjects, *peer_rules, *cidr_rules;

	subjects = bpf_map_lookup_elem(&sigil_subjects, &gen);
	if (!subjects)
		return;
	settings = bpf_map_lookup_elem(subjects, &subject);
	if (!settings)
		return;

	/* rules on the peer's identity */
	if (peer && !(settings->flags & SIGIL_SUBJECT_NO_PEER_RULES)) {
		peer_rules = bpf_map_lookup_elem(&sigil_peer_rules, &gen);
		peer_key.subject = subject;
		peer_key.peer = peer;
		list = peer_rules ? bpf_map_lookup_elem(peer_rules, &peer_key) : NULL;
		if (list)
			sigil_scan_rules(list, dst, verdict);
	}

	/* rules on the destination address, the longest prefix holding its ancestors' rules */
	cidr_rules = NULL;
	if (!(settings->flags & SIGIL_SUBJECT_NO_CIDR_RULES))
		cidr_rules = bpf_map_lookup_elem(&sigil_cidr_rules, &gen);
	if (cidr_rules) {
		cidr_key.prefixlen = 32 + 128;
		cidr_key.subject = bpf_htonl(subject);
		__builtin_memcpy(cidr_key.addr, dst->addr, 16);
		list = bpf_map_lookup_elem(cidr_rules, &cidr_key);
		if (list)
			sigil_scan_rules(list, dst, verdict);
	}

	/* nothing matched: the posture applies where the subject has Allow rules */
	if (verdict->action == SIGIL_ACTION_NONE &&
	    (settings->flags & SIGIL_SUBJECT_HAS_EGRESS_ALLOW)) {
		verdict->action = settings->egress_posture;
		verdict->reason = SIGIL_REASON_POSTURE;
	}
}

/* Writes a connect record; a full ring buffer is counted, never silent. */
static __always_inline void sigil_emit_connect(__u32 tgid, __u32 subject, __u32 peer,
					       __u32 peer_tgid, __u32 gen,
					       const struct sigil_endpoint *dst,
					       const struct sigil_egress_verdict *verdict,
					       __u8 denied, __u32 enforcer)
{
	struct sigil_connect_record *record;

	/* reserve the record */
	record = sigil_reserve_event(SIGIL_RECORD_CONNECT, sizeof(*record));
	if (!record)
		return;

	/* fill it */
	record->tgid = tgid;
	sigil_current_ids(&record->ppid, &record->uid, &record->gid);
	record->subject_id = subject;
	record->peer_id = peer;
	record->generation = gen;
	record->rule_index = verdict->rule_index;
	record->cgroup_id = bpf_get_current_cgroup_id();
	record->family = dst->family;
	record->port = dst->port;
	record->protocol = dst->protocol;
	record->action = verdict->action;
	record->reason = verdict->reason;
	record->denied = denied;
	__builtin_memcpy(record->addr, dst->addr, 16);
	record->peer_tgid = peer_tgid;
	record->enforcer = enforcer;
	bpf_get_current_comm(record->comm, sizeof(record->comm));

	/* submit; only a Block record wakes the consumer at once */
	bpf_ringbuf_submit(record, sigil_event_submit_flags(denied));
}

/*
 * Decides a connect() of process tgid (identity subject) to dst, whose local
 * listener, if any, is owned by peer_tgid with identity peer, under the rule
 * set that settings names. Writes the connect record when either side has an
 * identity, a rule or posture applied, or settings request every connect.
 * enforcer is the enum sigil_connect_enforcer of the calling program.
 * Returns whether the connect must be denied.
 */
static __always_inline bool sigil_decide_connect(const struct sigil_settings *settings,
						 __u32 tgid, __u32 subject, __u32 peer,
						 __u32 peer_tgid, const struct sigil_endpoint *dst,
						 __u32 enforcer)
{
	struct sigil_egress_verdict verdict = {};
	__u32 gen = settings->generation;
	__u8 denied;

	sigil_decide_egress(gen, subject, peer, dst, &verdict);
	denied = verdict.action == SIGIL_ACTION_BLOCK;
	if (subject || peer || verdict.action != SIGIL_ACTION_NONE ||
	    (settings->flags & SIGIL_SETTINGS_EMIT_ALL_CONNECTS))
		sigil_emit_connect(tgid, subject, peer, peer_tgid, gen, dst, &verdict, denied,
				   enforcer);
	return denied;
}

#endif /* SIGIL_EGRESS_BPF_H */
