// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The one definition of every Sigil map, and the program license. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define SIGIL_DEFINE_MAPS
#include "maps.bpf.h"
#include "egress.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
