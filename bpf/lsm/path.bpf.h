/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Directory-rule matching on a resolved path. One pass over the path updates
 * a 64-bit FNV-1a hash byte by byte (see sigil_lsm.h for the exact function).
 * At each '/' the hash covers one ancestor directory, "/" first, then "/a/",
 * "/a/b/" and so on, and is looked up as {subject, kind, hash}.
 *
 * Limits, which src/kernel/lsm-maps.ts repeats where it builds the keys:
 * - Hash collisions. With R directory keys, a lookup matches a directory it
 *   does not name with probability about R / 2^64 (1e4 keys: about 5e-16 per
 *   lookup). FNV-1a is not a cryptographic hash: the random seed of
 *   sigil_lsm_config keeps a process from computing a name that collides
 *   with an allowed directory, as long as the seed stays secret. Reading the
 *   map needs root or CAP_BPF where unprivileged BPF is disabled, the
 *   default of Debian and most distributions.
 * - Length. bpf_d_path fails with -ENAMETOOLONG for a path longer than
 *   SIGIL_LSM_PATH_BUFFER - 1 bytes; it does not return a truncated prefix.
 *   Such a file is matched by exact-file rules and the posture only.
 *   NOTE: so a process that may create directories and rename files below a
 *   directory Block rule can nest a file past that length and open it.
 * - Namespaces. The path is relative to the process's root (a container's
 *   root, a chroot), so a directory rule names the path inside the subject's
 *   root. Exact-file rules do not depend on the path.
 */
#ifndef SIGIL_LSM_PATH_BPF_H
#define SIGIL_LSM_PATH_BPF_H

#include "path_verdict.bpf.h"

/* State of one pass over a path, shared with the bpf_loop callback. */
struct path_walk {
	struct sigil_lsm_path_buffer *buffer;
	void *directories;	/* inner directory map of the generation, or NULL */
	struct sigil_lsm_directory_key key;
	__u64 seed;
	__u64 hash;
	struct path_verdict verdict;
	struct sigil_lsm_verdict parent;	/* non-recursive rules of the directory at the latest '/' */
	__u8 write_intent;
	__u8 last;		/* the last byte hashed */
};

static __always_inline __u64 fnv1a_step(__u64 hash, __u8 byte)
{
	return (hash ^ byte) * SIGIL_LSM_FNV_PRIME;
}

/* bpf_loop callback: hashes byte index of the path and looks up the directory it ends. */
static long walk_path_byte(__u32 index, void *context)
{
	struct path_walk *walk = context;
	struct sigil_lsm_directory_rules *rules;
	struct sigil_lsm_path_buffer *buffer = walk->buffer;
	__u8 byte;

	byte = buffer->path[index & (SIGIL_LSM_PATH_BUFFER - 1)];
	walk->hash = fnv1a_step(walk->hash, byte);
	walk->last = byte;
	if (byte != '/')
		return 0;

	/* another directory follows, so the previous one is not the parent */
	walk->parent.action = SIGIL_ACTION_NONE;
	walk->key.hash = walk->hash;
	rules = bpf_map_lookup_elem(walk->directories, &walk->key);
	if (!rules)
		return 0;
	raise_verdict(&walk->verdict,
		      walk->write_intent ? &rules->subtree.write : &rules->subtree.read,
		      SIGIL_LSM_MATCH_SUBTREE);
	walk->parent = walk->write_intent ? rules->direct.write : rules->direct.read;
	return 0;
}

/*
 * Applies the directory rules to the path in buffer (path_len bytes with the
 * NUL, as bpf_d_path returned it) and raises verdict. walk->directories must
 * be set. is_directory: the file is a directory, whose own rules apply too.
 */
static __always_inline void match_directories(struct path_walk *walk,
					      struct sigil_lsm_path_buffer *buffer, int path_len,
					      bool is_directory, struct path_verdict *verdict)
{
	struct sigil_lsm_directory_rules *rules;

	walk->buffer = buffer;
	walk->hash = SIGIL_LSM_FNV_OFFSET_BASIS ^ walk->seed;
	walk->verdict = (struct path_verdict){};
	walk->parent = (struct sigil_lsm_verdict){};
	walk->last = 0;
	bpf_loop(path_len - 1, walk_path_byte, walk, 0);

	/* the directory of the last '/' is the parent */
	raise_verdict(&walk->verdict, &walk->parent, SIGIL_LSM_MATCH_DIRECTORY);

	/* an opened directory: its own rules, keyed with a trailing '/' ("/" is its own key) */
	if (is_directory) {
		walk->key.hash = walk->last == '/' ? walk->hash : fnv1a_step(walk->hash, '/');
		rules = bpf_map_lookup_elem(walk->directories, &walk->key);
		if (rules) {
			raise_verdict(&walk->verdict,
				      walk->write_intent ? &rules->direct.write : &rules->direct.read,
				      SIGIL_LSM_MATCH_DIRECTORY);
			raise_verdict(&walk->verdict,
				      walk->write_intent ? &rules->subtree.write : &rules->subtree.read,
				      SIGIL_LSM_MATCH_DIRECTORY);
		}
	}
	*verdict = walk->verdict;
}

#endif /* SIGIL_LSM_PATH_BPF_H */
