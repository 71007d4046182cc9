// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The one definition of every map of the LSM object, and its license. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define SIGIL_DEFINE_MAPS
#include "lsm_maps.bpf.h"

/* LSM programs must have a GPL-compatible license. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";
