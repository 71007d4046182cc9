// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Kernel-side event generator for bench/events-kernel.ts. On every getppid()
 * of one configured process it writes copies of a template connect record
 * into the agent's sigil_events ring buffer, which the bench reuses through
 * its bpffs pin. A failed reserve is counted both in the agent's sigil_drops
 * map, as the real programs do, and in this object's own statistics, so the
 * bench can check that every generated record is delivered or counted lost.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define SIGIL_DEFINE_MAPS
#include "maps.bpf.h"

/* Records written per getppid() call at most; bounds the bpf_loop. */
#define GENERATOR_MAX_BURST 4096

/* Settings written by the bench before the driver starts. */
struct generator_config {
	__u32 tgid;		/* process whose getppid() calls generate records; 0 turns it off */
	__u32 burst;		/* records per call, at most GENERATOR_MAX_BURST */
};

/* Outcome counters, per CPU. */
struct generator_stats {
	__u64 calls;		/* getppid() calls of the configured process */
	__u64 written;		/* records submitted to the ring buffer */
	__u64 reserve_failed;	/* records lost because the ring buffer was full */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct generator_config);
} generator_config SEC(".maps");

/* The record copied into the ring buffer; only header.ktime_ns changes per copy. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sigil_connect_record);
} generator_template SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct generator_stats);
} generator_stats SEC(".maps");

struct burst_context {
	struct sigil_connect_record *template;
	struct generator_stats *stats;
};

/* Writes one copy of the template, or counts the failed reserve. */
static long write_one(__u64 index, void *data)
{
	struct burst_context *ctx = data;
	struct sigil_connect_record *record;

	record = bpf_ringbuf_reserve(&sigil_events, sizeof(*record), 0);
	if (!record) {
		sigil_count_drop(SIGIL_DROP_EVENTS_RINGBUF_FULL);
		ctx->stats->reserve_failed++;
		return 0;
	}
	__builtin_memcpy(record, ctx->template, sizeof(*record));
	record->header.ktime_ns = bpf_ktime_get_boot_ns();
	bpf_ringbuf_submit(record, 0);
	ctx->stats->written++;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int generator_getppid(void *ctx)
{
	__u32 zero = 0;
	struct generator_config *config = bpf_map_lookup_elem(&generator_config, &zero);
	struct burst_context burst = {};
	__u32 count;

	if (!config || !config->tgid || config->tgid != bpf_get_current_pid_tgid() >> 32)
		return 0;
	burst.template = bpf_map_lookup_elem(&generator_template, &zero);
	burst.stats = bpf_map_lookup_elem(&generator_stats, &zero);
	if (!burst.template || !burst.stats)
		return 0;

	/* Write the burst; the loop bound is checked here, not by the verifier. */
	count = config->burst;
	if (count > GENERATOR_MAX_BURST)
		count = GENERATOR_MAX_BURST;
	burst.stats->calls++;
	bpf_loop(count, write_one, &burst, 0);
	return 0;
}
