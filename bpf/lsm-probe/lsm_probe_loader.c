// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Usage: lsm-probe DENIED_PATH LINK_PIN
 *
 * Loads lsm_probe.bpf.o (embedded through its libbpf skeleton) set to deny
 * opening DENIED_PATH, attaches it to lsm/file_open and pins the link at
 * LINK_PIN on a bpffs mount, then exits. The program stays attached until
 * the pin is removed. Exit status: 0 when attached, 1 on any failure, 2 on
 * invalid arguments.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <bpf/libbpf.h>

#include "lsm_probe.skel.h"

/* Passes libbpf's warnings (with the verifier log of a failed load) to stderr. */
static int print_libbpf_message(enum libbpf_print_level level, const char *format, va_list args)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, format, args);
}

int main(int argc, char **argv)
{
	struct lsm_probe *skel = NULL;
	struct bpf_link *link = NULL;
	const char *denied_path, *pin_path;
	int err, status = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: %s DENIED_PATH LINK_PIN\n", argv[0]);
		return 2;
	}
	denied_path = argv[1];
	pin_path = argv[2];
	if (denied_path[0] != '/' || strlen(denied_path) >= sizeof(skel->rodata->denied_path)) {
		fprintf(stderr, "lsm-probe: invalid DENIED_PATH %s: expected an absolute path shorter than %zu bytes\n",
			denied_path, sizeof(skel->rodata->denied_path));
		return 2;
	}

	libbpf_set_print(print_libbpf_message);

	skel = lsm_probe__open();
	if (!skel) {
		fprintf(stderr, "lsm-probe: opening the BPF object failed: %s\n", strerror(errno));
		goto out;
	}
	/* .rodata stays writable until the load. The length check above keeps the final NUL. */
	strcpy((char *)skel->rodata->denied_path, denied_path);

	err = lsm_probe__load(skel);
	if (err) {
		fprintf(stderr, "lsm-probe: loading the BPF program failed: %s\n", strerror(-err));
		goto out;
	}

	link = bpf_program__attach_lsm(skel->progs.deny_file_open);
	if (!link) {
		fprintf(stderr, "lsm-probe: attaching to lsm/file_open failed: %s\n", strerror(errno));
		goto out;
	}

	err = bpf_link__pin(link, pin_path);
	if (err) {
		fprintf(stderr, "lsm-probe: pinning the link at %s failed: %s\n", pin_path, strerror(-err));
		goto out;
	}
	printf("lsm-probe: denying open of %s; remove %s to detach\n", denied_path, pin_path);
	status = 0;

out:
	/* Closing the link's file descriptor keeps a pinned link attached. */
	bpf_link__destroy(link);
	lsm_probe__destroy(skel);
	return status;
}
