// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * BPF LSM program of the VM harness self-check: denies opening one file,
 * named by its absolute path, with EPERM. It proves that the test VM's
 * kernel runs BPF LSM programs and bpf_d_path in lsm/file_open. Sigil
 * itself never loads it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define EPERM 1
#define DENIED_PATH_SIZE 256

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Set by the loader before the program is loaded (NUL-terminated). It sits
 * in the read-only .rodata map, which makes it a constant string that the
 * verifier accepts as bpf_strncmp's third argument.
 */
const volatile char denied_path[DENIED_PATH_SIZE] = {};

SEC("lsm/file_open")
int BPF_PROG(deny_file_open, struct file *file, int ret)
{
	char path[DENIED_PATH_SIZE];

	/*
	 * ret is the return value of the BPF LSM programs that ran before this
	 * one on the same hook, and a denial stays a denial. In Linux 6.1 ret
	 * is always 0: the x86 trampoline skips the remaining programs after a
	 * non-zero return, and the LSM framework stops at the first LSM that
	 * denies. The check keeps the program right where that changes.
	 */
	if (ret != 0)
		return ret;

	/*
	 * bpf_d_path fails with -ENAMETOOLONG on paths longer than the buffer,
	 * and such files open. Newer kernels declare f_path const, but
	 * bpf_d_path only reads it.
	 */
	if (bpf_d_path((struct path *)&file->f_path, path, sizeof(path)) < 0)
		return 0;

	if (bpf_strncmp(path, sizeof(path), (const char *)denied_path) == 0)
		return -EPERM;
	return 0;
}
