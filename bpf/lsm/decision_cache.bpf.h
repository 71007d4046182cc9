/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Cache of the directory part of exec and file-open decisions, so that an
 * open skips bpf_d_path and the directory walk when a decision in the same
 * directory was made before.
 *
 * The verdict of path.bpf.h depends on the rule-set generation, the subject,
 * the kind, the read or write intent, whether the file is a directory, and
 * the path that bpf_d_path returns. For a file that is not a directory only
 * the path of its parent directory counts, because the walk looks up
 * ancestors at each '/', and a name contains no '/'. A file that is itself
 * the root of a mount (a bind mount of one file) gets the mountpoint's path
 * instead, but it is the only file that its mount reaches, and the mount is
 * in the key. The exact-file rules (match_inode) depend on the file's
 * (device, inode), and the posture on the subject's entry of the
 * generation. So the cache stores only the walk's verdict, with a copy of
 * the subject's entry, and every decision still applies the exact-file
 * rules and the posture, and writes its record. The key contains what decides the walk
 * except the path, which it replaces with what decides that path: the file's
 * mount, the "anchor" dentry (the parent directory, or the opened directory
 * itself) with its inode number and i_generation, and the process's root
 * (fs->root), since d_path is relative to the root. A cached verdict also
 * stores the length of the anchor's path, because bpf_d_path fails for a
 * path longer than its buffer and then no directory rule matches.
 *
 * There are two levels. Each CPU keeps SIGIL_LSM_CPU_DECISION_SLOTS verdicts
 * in a per-CPU array, which a hit reads with no helper call and no hashing
 * of the key. Behind it, an LRU hash map shared by all CPUs takes a verdict
 * only from its second walk (decision_cache_seen), so a directory visited
 * once evicts no entry that repeats.
 *
 * A verdict is used only while the kernel's rename_lock and mount_lock
 * sequence counts are the ones read before its path was resolved. The kernel
 * writes rename_lock around every d_move and d_exchange (rename(), and
 * d_splice_alias moving a directory), and mount_lock around every change of
 * the mount tree (mount, bind, move, umount, pivot_root, namespace copy and
 * teardown, automounts). So any change that could give a cached dentry or
 * mount another path discards every verdict, with no LSM hook and no race
 * with an operation that a pre-operation hook would see too early.
 *
 * Not cached: a deleted file or directory (d_path appends " (deleted)"), a
 * process without fs_struct, and files on filesystems not listed in
 * cacheable_filesystem(). Network filesystems, FUSE, sysfs and procfs can
 * move a directory by dropping its dentry and looking it up again, which
 * rename_lock does not see.
 *
 * NOTE: pointers in the key can be reused once their object is freed. A
 * stale hit needs a new anchor dentry at the old one's address, with the old
 * inode number and i_generation, but another path. That happens when a
 * directory is removed (rmdir) and another one, made elsewhere, gets the same
 * inode number and i_generation. The same applies to a chroot into such a
 * directory.
 */
#ifndef SIGIL_LSM_DECISION_CACHE_BPF_H
#define SIGIL_LSM_DECISION_CACHE_BPF_H

#include "lsm_maps.bpf.h"

/* Superblock magic numbers of include/uapi/linux/magic.h. */
#define EXT4_SUPER_MAGIC 0xEF53		/* also ext2 and ext3 */
#define XFS_SUPER_MAGIC 0x58465342
#define BTRFS_SUPER_MAGIC 0x9123683E
#define TMPFS_MAGIC 0x01021994
#define RAMFS_MAGIC 0x858458F6
#define OVERLAYFS_SUPER_MAGIC 0x794C7630
#define F2FS_SUPER_MAGIC 0xF2F52010

/*
 * Kernel sequence locks. libbpf resolves untyped ksyms through /proc/kallsyms
 * at load, which needs no BTF for the variables. They are weak, so a kernel
 * whose kallsyms lists them without an address, or not at all, loads the
 * programs and caches nothing.
 */
extern const void rename_lock __ksym __weak;
extern const void mount_lock __ksym __weak;

/*
 * Reads the sequence count of a kernel seqlock_t. Returns false when it is
 * unreadable or odd, which means a writer is inside.
 */
static __always_inline bool read_sequence(const void *lock, __u32 *sequence)
{
	const seqlock_t *seqlock = lock;

	if (!lock)
		return false;
	if (bpf_core_read(sequence, sizeof(*sequence), &seqlock->seqcount.seqcount.sequence))
		return false;
	return (*sequence & 1) == 0;
}

static __always_inline bool read_stamp(struct sigil_lsm_decision_stamp *stamp)
{
	return read_sequence(&rename_lock, &stamp->rename_sequence) &&
	       read_sequence(&mount_lock, &stamp->mount_sequence);
}

/* Filesystems whose directories change their path only through d_move. */
static __always_inline bool cacheable_filesystem(unsigned long magic)
{
	switch (magic) {
	case EXT4_SUPER_MAGIC:
	case XFS_SUPER_MAGIC:
	case BTRFS_SUPER_MAGIC:
	case TMPFS_MAGIC:
	case RAMFS_MAGIC:
	case OVERLAYFS_SUPER_MAGIC:
	case F2FS_SUPER_MAGIC:
		return true;
	default:
		return false;
	}
}

/*
 * A dentry that d_path reports as deleted: unhashed and not the root of its
 * filesystem. Like the rest of this file, it reads kernel structs with plain
 * loads, which the verifier turns into fault-safe loads without a helper call.
 */
static __always_inline bool dentry_deleted(struct dentry *dentry)
{
	return !dentry->d_hash.pprev && dentry->d_parent != dentry;
}

/*
 * Fills the cache key of an access and the stamp that an entry must carry to
 * be used. Returns false when the access must not be cached. The caller sets
 * the other fields (generation, subject, kind, intent, is_directory).
 *
 * The stamp is read first. A rename or mount change after that makes the
 * stamp stale, so an entry stored with it is never used, even if the fields
 * below mixed the states before and after the change.
 */
static __always_inline bool decision_cache_key(struct task_struct *task, struct file *file,
					       bool is_directory,
					       struct sigil_lsm_decision_cache_key *key,
					       struct sigil_lsm_decision_stamp *stamp)
{
	struct dentry *dentry, *anchor, *root;
	struct inode *anchor_inode, *root_inode;
	struct fs_struct *fs;

	if (!read_stamp(stamp))
		return false;

	dentry = file->f_path.dentry;
	if (!cacheable_filesystem(dentry->d_sb->s_magic) || dentry_deleted(dentry))
		return false;
	anchor = is_directory ? dentry : dentry->d_parent;
	if (dentry_deleted(anchor))
		return false;
	anchor_inode = anchor->d_inode;
	fs = task->fs;
	if (!anchor_inode || !fs)
		return false;
	root = fs->root.dentry;
	root_inode = root->d_inode;
	if (!root_inode)
		return false;

	key->mount = (__u64)file->f_path.mnt;
	key->anchor = (__u64)anchor;
	key->anchor_ino = anchor_inode->i_ino;
	key->anchor_generation = anchor_inode->i_generation;
	key->root_mount = (__u64)fs->root.mnt;
	key->root = (__u64)root;
	key->root_ino = root_inode->i_ino;
	key->root_generation = root_inode->i_generation;
	return true;
}

/* Returns the length of the file's name, which bpf_d_path appends to the anchor's path. */
static __always_inline __u32 file_name_len(struct file *file, bool is_directory)
{
	return is_directory ? 0 : file->f_path.dentry->d_name.len;
}

/* Returns true when verdict is current under stamp and the file's path fits bpf_d_path's buffer. */
static __always_inline bool directory_verdict_valid(const struct sigil_lsm_directory_verdict *verdict,
						    const struct sigil_lsm_decision_stamp *stamp,
						    __u32 name_len)
{
	return verdict->stamp.rename_sequence == stamp->rename_sequence &&
	       verdict->stamp.mount_sequence == stamp->mount_sequence &&
	       verdict->prefix_len + name_len <= SIGIL_LSM_PATH_BUFFER;
}

/*
 * Returns a 32-bit fingerprint of the key's number fields. The pointer
 * fields are left out because the verifier allows no arithmetic on them.
 */
static __always_inline __u32 decision_fingerprint(const struct sigil_lsm_decision_cache_key *key)
{
	__u64 hash = key->anchor_ino * 0x9E3779B97F4A7C15ULL;

	hash ^= (__u64)key->anchor_generation << 32;
	hash ^= ((__u64)key->subject << 32) | key->generation;
	hash ^= ((__u64)key->kind << 16) | ((__u64)key->write_intent << 8) | key->is_directory;
	hash ^= key->root_ino + ((__u64)key->root_generation << 32);
	/* the finalizer of SplitMix64, so that every input bit reaches the low bits */
	hash ^= hash >> 30;
	hash *= 0xBF58476D1CE4E5B9ULL;
	hash ^= hash >> 27;
	hash *= 0x94D049BB133111EBULL;
	hash ^= hash >> 31;
	return (__u32)hash;
}

/* Returns true when the two keys are equal, compared as 8-byte words. */
static __always_inline bool same_cache_key(const struct sigil_lsm_decision_cache_key *a,
					   const struct sigil_lsm_decision_cache_key *b)
{
	const __u64 *left = (const __u64 *)a, *right = (const __u64 *)b;

#pragma unroll
	for (int i = 0; i < sizeof(*a) / sizeof(__u64); i++) {
		if (left[i] != right[i])
			return false;
	}
	return true;
}

/* Keeps the compiler from moving memory accesses across it. */
#define compiler_barrier() asm volatile("" ::: "memory")

/*
 * Copies the CPU's cached verdict for key into verdict; returns false when it
 * has none that is valid. Another program run on this CPU can write the slot
 * only while this one is preempted, so the slot's sequence, read before and
 * after the copy, shows such a write.
 */
static __always_inline bool cpu_cache_find(const struct sigil_lsm_decision_cache_key *key,
					   __u32 fingerprint,
					   const struct sigil_lsm_decision_stamp *stamp, __u32 name_len,
					   struct sigil_lsm_directory_verdict *verdict)
{
	struct sigil_lsm_cpu_decisions *decisions;
	struct sigil_lsm_cpu_decision *slot;
	__u32 zero = 0, sequence;

	decisions = bpf_map_lookup_elem(&sigil_lsm_cpu_decisions, &zero);
	if (!decisions)
		return false;
	slot = &decisions->slots[fingerprint & (SIGIL_LSM_CPU_DECISION_SLOTS - 1)];
	sequence = *(volatile __u32 *)&slot->sequence;
	if (sequence & 1)
		return false;
	compiler_barrier();
	if (!same_cache_key(&slot->key, key))
		return false;
	*verdict = slot->verdict;
	compiler_barrier();
	if (*(volatile __u32 *)&slot->sequence != sequence)
		return false;
	return directory_verdict_valid(verdict, stamp, name_len);
}

/* Stores verdict for key in the CPU's cache, unless a preempted program run is writing the slot. */
static __always_inline void cpu_cache_store(const struct sigil_lsm_decision_cache_key *key,
					    __u32 fingerprint,
					    const struct sigil_lsm_directory_verdict *verdict)
{
	struct sigil_lsm_cpu_decisions *decisions;
	struct sigil_lsm_cpu_decision *slot;
	__u32 zero = 0, sequence;

	decisions = bpf_map_lookup_elem(&sigil_lsm_cpu_decisions, &zero);
	if (!decisions)
		return;
	slot = &decisions->slots[fingerprint & (SIGIL_LSM_CPU_DECISION_SLOTS - 1)];
	sequence = *(volatile __u32 *)&slot->sequence;
	if (sequence & 1)
		return;
	*(volatile __u32 *)&slot->sequence = sequence + 1;
	compiler_barrier();
	slot->key = *key;
	slot->verdict = *verdict;
	compiler_barrier();
	*(volatile __u32 *)&slot->sequence = sequence + 2;
}

/*
 * Returns true when fingerprint is in sigil_lsm_decision_filter, and
 * otherwise puts it there. Only a directory verdict seen before is looked up
 * in the shared cache and stored. So a directory visited once, as by a build
 * or a backup, costs an array write instead of an LRU lookup, and it evicts
 * no entry that repeats.
 */
static __always_inline bool decision_cache_seen(__u32 fingerprint)
{
	__u32 slot = fingerprint & (SIGIL_LSM_DECISION_FILTER_SLOTS - 1);
	__u32 *seen;

	seen = bpf_map_lookup_elem(&sigil_lsm_decision_filter, &slot);
	if (!seen)
		return false;
	if (*seen == fingerprint)
		return true;
	*seen = fingerprint;
	return false;
}

/*
 * Copies the shared cache's verdict for key into verdict; returns false when
 * it has none that is valid. The kernel can reuse an LRU element for another
 * key while this program reads it, so the copy must carry the key's
 * fingerprint too.
 * NOTE: that check makes a mixed-up read unlikely, not impossible: two keys
 * with the same fingerprint, or a copy torn between two writes, can pass it.
 */
static __always_inline bool shared_cache_find(const struct sigil_lsm_decision_cache_key *key,
					      __u32 fingerprint,
					      const struct sigil_lsm_decision_stamp *stamp, __u32 name_len,
					      struct sigil_lsm_directory_verdict *verdict)
{
	struct sigil_lsm_directory_verdict *cached;

	cached = bpf_map_lookup_elem(&sigil_lsm_decision_cache, key);
	if (!cached)
		return false;
	*verdict = *cached;
	return verdict->fingerprint == fingerprint && directory_verdict_valid(verdict, stamp, name_len);
}

static __always_inline void shared_cache_store(const struct sigil_lsm_decision_cache_key *key,
					       const struct sigil_lsm_directory_verdict *verdict)
{
	bpf_map_update_elem(&sigil_lsm_decision_cache, key, verdict, BPF_ANY);
}

#endif /* SIGIL_LSM_DECISION_CACHE_BPF_H */
