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

/*
 * Generation -> CIDR rules of that rule set, one entry per subject and prefix.
 * The programs look up each prefix length of the subject in a hash map. With
 * 10,000 entries, a hit at the first length took about 20 ns and each length
 * that missed about 11 ns. An LPM trie lookup of the same entries took about
 * 100 ns. These are estimates from bpf_stats run times of cgroup/connect4
 * variants on Linux 6.18 (bench/connect-cost.js, 2 vCPUs).
 */
SIGIL_MAP SIGIL_GENERATION_MAP(BPF_MAP_TYPE_HASH, SIGIL_MAX_CIDR_KEYS,
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

/* Network byte order mask of the first n bits (n <= 32 * (word + 1)) of a 32-bit address word. */
#define SIGIL_MASK_WORD(n, word)						\
	((n) <= 32 * (word) ? 0u :						\
	 (n) >= 32 * (word) + 32 ? 0xffffffffu :				\
	 __builtin_bswap32(0xffffffffu << ((32 * (word) + 32 - (n)) & 31)))
#define SIGIL_MASK(n)								\
	{ SIGIL_MASK_WORD(n, 0), SIGIL_MASK_WORD(n, 1), SIGIL_MASK_WORD(n, 2),	\
	  SIGIL_MASK_WORD(n, 3) }
#define SIGIL_MASK4(n) SIGIL_MASK(n), SIGIL_MASK(n + 1), SIGIL_MASK(n + 2), SIGIL_MASK(n + 3)
#define SIGIL_MASK16(n) SIGIL_MASK4(n), SIGIL_MASK4(n + 4), SIGIL_MASK4(n + 8), SIGIL_MASK4(n + 12)
#define SIGIL_MASK64(n)								\
	SIGIL_MASK16(n), SIGIL_MASK16(n + 16), SIGIL_MASK16(n + 32), SIGIL_MASK16(n + 48)

/*
 * sigil_prefix_masks[n] keeps the first n bits of a 16-byte address. A table
 * instead of shifts keeps the lookup loop free of branches on the length,
 * which the verifier would otherwise explore one by one.
 */
static const __u32 sigil_prefix_masks[129][4] = {
	SIGIL_MASK64(0), SIGIL_MASK64(64), SIGIL_MASK(128),
};

/* Returns the number of set bits of x, with no branch. */
static __always_inline __u64 sigil_popcount(__u64 x)
{
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (x * 0x0101010101010101ULL) >> 56;
}

/*
 * Looks up the entry of key->subject for the first length bits of addr.
 * length must be at most 128, and the verifier checks that from the caller.
 */
static __always_inline struct sigil_rule_list *
sigil_lookup_prefix(void *cidr_rules, struct sigil_cidr_key *key, const __u32 *addr, __u32 length)
{
	const __u32 *mask = sigil_prefix_masks[length];
	__u32 *out = (__u32 *)key->addr;

	key->prefixlen = 32 + length;
	out[0] = addr[0] & mask[0];
	out[1] = addr[1] & mask[1];
	out[2] = addr[2] & mask[2];
	out[3] = addr[3] & mask[3];
	return bpf_map_lookup_elem(cidr_rules, key);
}

/*
 * Returns the rule list of the longest CIDR prefix of subject that contains
 * addr, or NULL. It looks up each prefix length of the subject in cidr_rules,
 * longest first, so the first hit is the longest match. The compiler copies
 * the rules of every shorter prefix that contains a prefix into its entry, so
 * that entry contains all the CIDR rules that apply.
 */
static __always_inline struct sigil_rule_list *
sigil_lookup_cidr(void *cidr_rules, const struct sigil_subject *settings, __u32 subject,
		  const __u8 *addr)
{
	const __u32 *words = (const __u32 *)addr;
	struct sigil_cidr_key key;
	struct sigil_rule_list *list;
	__u64 lengths, bit;

	key.subject = bpf_htonl(subject);
	/* bit n of word 0 is length 128 - n, and bit n of word 1 is length 64 - n */
	for (__u32 word = 0; word < 2; word++) {
		lengths = settings->cidr_lengths[word];
		for (int i = 0; i < 64 && lengths; i++) {
			/* the lowest set bit is the longest length left */
			bit = sigil_popcount((lengths & -lengths) - 1) & 63;
			lengths &= lengths - 1;
			list = sigil_lookup_prefix(cidr_rules, &key, words, 128 - 64 * word - bit);
			if (list)
				return list;
		}
	}
	/* bit 0 of word 2 is length 0 */
	if (settings->cidr_lengths[2] & 1)
		return sigil_lookup_prefix(cidr_rules, &key, words, 0);
	return NULL;
}

/* Applies the rule set of generation gen to a connect from subject to peer at dst. */
static __always_inline void sigil_decide_egress(__u32 gen, __u32 subject, __u32 peer,
						const struct sigil_endpoint *dst,
						struct sigil_egress_verdict *verdict)
{
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
	if (settings->cidr_lengths[0] | settings->cidr_lengths[1] | settings->cidr_lengths[2]) {
		cidr_rules = bpf_map_lookup_elem(&sigil_cidr_rules, &gen);
		list = cidr_rules ? sigil_lookup_cidr(cidr_rules, settings, subject, dst->addr) : NULL;
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
