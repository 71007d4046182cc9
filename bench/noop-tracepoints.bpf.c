// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Programs that return at once, for bench/open-exec-cost.js --floor. Attached
 * to the tracepoints of the tracepoint-kill and accept programs, they measure
 * what the attachments cost before any program does work.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("tracepoint")
int sigil_bench_noop_tracepoint(void *ctx)
{
	return 0;
}

SEC("raw_tp")
int sigil_bench_noop_raw_tracepoint(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
