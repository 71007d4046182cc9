/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Cache of exec and file-open decisions that allowed the access and wrote no
 * record, so that a repeated open skips bpf_d_path and the directory walk.
 * An allow is looked up and stored only from its second decision on
 * (decision_cache_seen).
 *
 * The verdict of path.bpf.h and match_inode depends on the rule-set
 * generation, the subject, the kind, the read or write intent, the file's
 * (device, inode), whether it is a directory, and the path that bpf_d_path
 * returns. For a file that is not a directory only the path of its parent
 * directory counts, because the walk looks up ancestors at each '/'. The key
 * contains all of these except the path, which it replaces with what decides
 * it: the file's mount, the "anchor" dentry (the parent directory, or the
 * opened directory itself) with its inode number and i_generation, and the
 * process's root (fs->root), since d_path is relative to the root.
 *
 * An entry is used only while the kernel's rename_lock and mount_lock
 * sequence counts are the ones read before its path was resolved. The kernel
 * writes rename_lock around every d_move and d_exchange (rename(), and
 * d_splice_alias moving a directory), and mount_lock around every change of
 * the mount tree (mount, bind, move, umount, pivot_root, namespace copy and
 * teardown, automounts). So any change that could give a cached dentry or
 * mount another path discards every entry, with no LSM hook and no race with
 * an operation that a pre-operation hook would see too early.
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
 * the other fields (generation, subject, kind, intent, device, inode,
 * is_directory).
 *
 * The stamp is read first. A rename or mount change after that makes the
 * stamp stale, so an entry stored with it is never used, even if the fields
 * below mixed the states before and after the change.
 */
static __always_inline bool decision_cache_key(struct file *file, bool is_directory,
					       struct sigil_lsm_decision_cache_key *key,
					       struct sigil_lsm_decision_stamp *stamp)
{
	struct task_struct *task = bpf_get_current_task_btf();
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

/* Returns true when the cache has an allow for key that is still valid under stamp. */
static __always_inline bool decision_cache_hit(const struct sigil_lsm_decision_cache_key *key,
					       const struct sigil_lsm_decision_stamp *stamp)
{
	struct sigil_lsm_decision_stamp *cached;

	cached = bpf_map_lookup_elem(&sigil_lsm_decision_cache, key);
	return cached && cached->rename_sequence == stamp->rename_sequence &&
	       cached->mount_sequence == stamp->mount_sequence;
}

/*
 * Returns a 32-bit fingerprint of the key's number fields. The pointer
 * fields are left out because the verifier allows no arithmetic on them.
 */
static __always_inline __u32 decision_fingerprint(const struct sigil_lsm_decision_cache_key *key)
{
	__u64 hash = key->ino * 0x9E3779B97F4A7C15ULL;

	hash ^= key->anchor_ino + ((__u64)key->anchor_generation << 32);
	hash ^= ((__u64)key->subject << 32) | key->generation;
	hash ^= ((__u64)key->dev << 24) | ((__u64)key->kind << 16) | ((__u64)key->write_intent << 8) |
		key->is_directory;
	hash ^= key->root_ino + ((__u64)key->root_generation << 32);
	/* the finalizer of SplitMix64, so that every input bit reaches the low bits */
	hash ^= hash >> 30;
	hash *= 0xBF58476D1CE4E5B9ULL;
	hash ^= hash >> 27;
	hash *= 0x94D049BB133111EBULL;
	hash ^= hash >> 31;
	return (__u32)hash;
}

/*
 * Returns true when the key's fingerprint is in sigil_lsm_decision_filter,
 * and otherwise puts it there. Only a decision seen before is looked up in
 * the cache and stored. So a file opened once, as by a build or a backup,
 * costs an array write instead of an LRU lookup, and it evicts no entry that
 * repeats.
 */
static __always_inline bool decision_cache_seen(const struct sigil_lsm_decision_cache_key *key)
{
	__u32 fingerprint = decision_fingerprint(key);
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

static __always_inline void decision_cache_store(const struct sigil_lsm_decision_cache_key *key,
						 const struct sigil_lsm_decision_stamp *stamp)
{
	bpf_map_update_elem(&sigil_lsm_decision_cache, key, stamp, BPF_ANY);
}

#endif /* SIGIL_LSM_DECISION_CACHE_BPF_H */
