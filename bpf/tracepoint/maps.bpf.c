// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The one definition of every map of the tracepoint-kill object, and its license. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define SIGIL_DEFINE_MAPS
#include "tp_maps.bpf.h"

/* bpf_send_signal and bpf_probe_read_user_str need a GPL-compatible license. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";
