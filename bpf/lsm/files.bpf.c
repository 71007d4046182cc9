// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Identity-keyed exec and file-open enforcement with BPF LSM programs.
 * lsm/bprm_check_security decides each program that execve() runs, and
 * lsm/file_open each open(). Both look up the rules of the subject (the
 * identity of the current process) in the active rule-set generation.
 * Exact-file rules match the file's (device, inode), so hard links, symlinks
 * and renames reach the same rule. Directory rules match the path that
 * bpf_d_path resolves. The verdict of the directory rules is cached per
 * directory until a rename or mount change (decision_cache.bpf.h).
 *
 * A hook returns -EPERM only for a Block rule, or for a Block posture of a
 * subject that has Allow rules of the kind and no rule that matched. Block
 * beats Audit beats Allow; among rules of equal action the lowest rule index
 * is reported.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "lsm_maps.bpf.h"
#include "path_verdict.bpf.h"
#include "path.bpf.h"
#include "decision_cache.bpf.h"

#define EAGAIN 11

/*
 * include/linux/fs.h and include/linux/fcntl.h. execve() opens the program
 * with __FMODE_EXEC, which the kernel keeps in f_flags, not in f_mode.
 */
#define FMODE_WRITE 0x2
#define __FMODE_EXEC 0x20
#define O_TRUNC 01000
#define S_IFMT 0170000
#define S_IFDIR 0040000

/*
 * How often the path is resolved and matched again when another program run
 * on the same CPU overwrote the per-CPU path buffer in between (possible on
 * preemptible kernels). After that the directory rules are skipped.
 */
#define PATH_ATTEMPTS 3

/* The file a hook decides on, and what the process wants to do with it. */
struct file_access {
	struct file *file;
	__u32 kind;		/* enum sigil_lsm_kind */
	__u8 write_intent;
	__u8 exec_open;
};

/* Applies the exact-file rules of the subject to the file's inode. */
static __always_inline void match_inode(__u32 gen, __u32 subject, const struct file_access *access,
					__u32 dev, __u64 ino, struct path_verdict *verdict)
{
	struct sigil_lsm_inode_key key = {};
	struct sigil_lsm_access *rules;
	void *inodes;

	inodes = bpf_map_lookup_elem(&sigil_lsm_inodes, &gen);
	if (!inodes)
		return;
	key.ino = ino;
	key.dev = dev;
	key.subject = subject;
	key.kind = access->kind;
	rules = bpf_map_lookup_elem(inodes, &key);
	if (!rules)
		return;
	raise_verdict(verdict, access->write_intent ? &rules->write : &rules->read,
		      SIGIL_LSM_MATCH_INODE);
}

/*
 * Resolves the file's path into the per-CPU buffer and, when directories is
 * set, applies the directory rules to it: their verdict goes to
 * directory_verdict and is merged into verdict. Returns bpf_d_path's result,
 * or -EAGAIN when the buffer kept being overwritten. owner identifies this
 * run.
 */
static __always_inline int resolve_and_match(struct sigil_lsm_path_buffer *buffer, __u64 owner,
					     struct path_walk *walk, const struct file_access *access,
					     bool is_directory, struct path_verdict *verdict,
					     struct path_verdict *directory_verdict)
{
	int path_len = -EAGAIN;

	for (int attempt = 0; attempt < PATH_ATTEMPTS; attempt++) {
		buffer->owner = owner;
		path_len = bpf_d_path((struct path *)&access->file->f_path, buffer->path,
				      sizeof(buffer->path));
		*directory_verdict = (struct path_verdict){};
		if (walk->directories && path_len > 1)
			match_directories(walk, buffer, path_len, is_directory, directory_verdict);
		/* another run on this CPU took the buffer: its bytes may have been mixed into the match */
		if (buffer->owner == owner) {
			merge_verdict(verdict, directory_verdict);
			return path_len;
		}
	}
	return -EAGAIN;
}

/* Writes a file-open or exec decision record; a full ring buffer is counted, never silent. */
static __always_inline void emit_decision(const struct file_access *access,
					  const struct sigil_path_decision *decision,
					  struct sigil_lsm_path_buffer *buffer, __u64 owner)
{
	struct sigil_file_decision_record *file_record = NULL;
	struct sigil_exec_decision_record *exec_record = NULL;
	struct sigil_path_decision *out;
	char *comm, *path;
	__u64 flags;

	/* reserve the record */
	if (access->kind == SIGIL_LSM_KIND_EXEC) {
		exec_record = bpf_ringbuf_reserve(&sigil_events, sizeof(*exec_record), 0);
		if (!exec_record) {
			sigil_count_drop(SIGIL_DROP_EVENTS_RINGBUF_FULL);
			return;
		}
		exec_record->header.type = SIGIL_RECORD_EXEC_DECISION;
		exec_record->header.size = sizeof(*exec_record);
		exec_record->header.ktime_ns = bpf_ktime_get_boot_ns();
		out = &exec_record->decision;
		comm = exec_record->comm;
		path = exec_record->path;
	} else {
		file_record = bpf_ringbuf_reserve(&sigil_events, sizeof(*file_record), 0);
		if (!file_record) {
			sigil_count_drop(SIGIL_DROP_EVENTS_RINGBUF_FULL);
			return;
		}
		file_record->header.type = SIGIL_RECORD_FILE_DECISION;
		file_record->header.size = sizeof(*file_record);
		file_record->header.ktime_ns = bpf_ktime_get_boot_ns();
		file_record->write_intent = access->write_intent;
		file_record->exec_open = access->exec_open;
		__builtin_memset(file_record->pad, 0, sizeof(file_record->pad));
		out = &file_record->decision;
		comm = file_record->comm;
		path = file_record->path;
	}

	/* fill it */
	*out = *decision;
	bpf_get_current_comm(comm, SIGIL_COMM_LEN);
	if (decision->path_len > 0)
		bpf_probe_read_kernel_str(path, SIGIL_PATH_MAX, buffer->path);
	else
		path[0] = '\0';
	if (buffer->owner != owner) {
		/* the buffer was overwritten while it was copied */
		out->path_len = -EAGAIN;
		path[0] = '\0';
	}

	/* submit; only a Block record wakes the consumer at once */
	flags = sigil_event_submit_flags(decision->action == SIGIL_ACTION_BLOCK);
	if (exec_record)
		bpf_ringbuf_submit(exec_record, flags);
	else if (file_record)
		bpf_ringbuf_submit(file_record, flags);
}

/*
 * Fills the decision-cache key of an access, its fingerprint, the stamp it
 * must carry and the length of the file's name. Returns false when the
 * access is not cached.
 */
static __always_inline bool fill_cache_key(struct task_struct *task,
					   const struct file_access *access, __u32 gen,
					   __u32 subject, bool is_directory,
					   struct sigil_lsm_decision_cache_key *key, __u32 *fingerprint,
					   struct sigil_lsm_decision_stamp *stamp, __u32 *name_len)
{
	key->generation = gen;
	key->subject = subject;
	key->kind = access->kind;
	key->write_intent = access->write_intent;
	key->is_directory = is_directory;
	if (!decision_cache_key(task, access->file, is_directory, key, stamp))
		return false;
	*name_len = file_name_len(access->file, is_directory);
	*fingerprint = decision_fingerprint(key);
	return true;
}

/*
 * Looks up the directory verdict of an access in the shared cache. Returns
 * true on a hit, with the verdict in cached, which then goes to the CPU's
 * cache too, with the subject's entry that the caller looked up. Sets *seen
 * for a later store.
 */
static __always_inline bool find_shared_verdict(const struct sigil_lsm_decision_cache_key *key,
						__u32 fingerprint,
						const struct sigil_lsm_decision_stamp *stamp,
						__u32 name_len,
						const struct sigil_lsm_subject *subject_rules,
						bool *seen, struct sigil_lsm_directory_verdict *cached)
{
	*seen = decision_cache_seen(fingerprint);
	if (*seen && shared_cache_find(key, fingerprint, stamp, name_len, cached)) {
		cached->subject_rules = *subject_rules;
		cpu_cache_store(key, fingerprint, cached);
		return true;
	}
	return false;
}

/* Decides one exec or open and returns the hook's verdict: 0 or -EPERM. */
static __always_inline int decide_access(const struct file_access *access)
{
	/* plain loads from the task, one helper call instead of two with bpf_get_current_pid_tgid */
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = task->tgid;
	__u64 owner = ((__u64)tgid << 32) | (__u32)task->pid;
	struct sigil_path_decision decision = {};
	struct path_verdict verdict = {}, directory_verdict = {};
	struct path_walk walk = {};
	struct sigil_lsm_path_buffer *buffer;
	struct sigil_lsm_subject *subject_rules = NULL;
	struct sigil_lsm_config *config;
	struct sigil_settings *settings;
	struct inode *inode;
	struct file *file;
	__u32 zero = 0, gen, subject, dev, posture_flag, no_directories_flag, no_inodes_flag;
	__u32 name_len = 0, fingerprint = 0;
	void *subjects;
	__u64 ino;
	bool is_directory, has_directory_rules, recorded;
	bool use_cache, key_filled = false, cacheable = false, cache_hit = false, seen = false;
	int path_len = 0;
	struct sigil_lsm_decision_cache_key cache_key = {};
	struct sigil_lsm_decision_stamp stamp = {};
	struct sigil_lsm_directory_verdict cached = {};

	settings = bpf_map_lookup_elem(&sigil_settings, &zero);
	buffer = bpf_map_lookup_elem(&sigil_lsm_path_buffers, &zero);
	config = bpf_map_lookup_elem(&sigil_lsm_config, &zero);
	if (!settings || !buffer || !config)
		return 0;
	gen = settings->generation;
	subject = sigil_identity_of(tgid);

	/*
	 * Plain loads, which the verifier turns into fault-safe loads without the
	 * helper call of BPF_CORE_READ. The local copy keeps the CO-RE
	 * relocations on kernel types only.
	 */
	file = access->file;
	inode = file->f_inode;
	dev = inode->i_sb->s_dev;
	ino = inode->i_ino;
	is_directory = (inode->i_mode & S_IFMT) == S_IFDIR;

	/*
	 * The verdict of the directory rules, from an earlier walk in the same
	 * directory and path state: first the CPU's cache, which also contains
	 * the subject's entry, so a hit there needs no lookup of the subject.
	 * Unidentified processes (subject 0), most of a node's, have no rules
	 * in most policies, so they look up their subject entry before any
	 * cache.
	 */
	use_cache = !(settings->flags & SIGIL_SETTINGS_REPORT_ALLOWED_ACCESS);
	if (use_cache && subject) {
		cacheable = fill_cache_key(task, access, gen, subject, is_directory, &cache_key,
					   &fingerprint, &stamp, &name_len);
		key_filled = true;
		cache_hit = cacheable &&
			    cpu_cache_find(&cache_key, fingerprint, &stamp, name_len, &cached);
	}
	if (cache_hit) {
		subject_rules = &cached.subject_rules;
	} else {
		subjects = bpf_map_lookup_elem(&sigil_lsm_subjects, &gen);
		if (subjects)
			subject_rules = bpf_map_lookup_elem(subjects, &subject);
	}
	/* no rules: nothing to decide, and nothing to report unless allowed access is recorded */
	if (!subject_rules && !(subject && (settings->flags & SIGIL_SETTINGS_REPORT_ALLOWED_ACCESS)))
		return 0;

	no_directories_flag = access->kind == SIGIL_LSM_KIND_EXEC ? SIGIL_LSM_SUBJECT_NO_EXEC_DIRECTORIES
								  : SIGIL_LSM_SUBJECT_NO_FILE_DIRECTORIES;
	has_directory_rules = subject_rules && !(subject_rules->flags & no_directories_flag);
	/* without directory rules the decision below resolves no path, so nothing is cached */
	if (use_cache && has_directory_rules && !cache_hit) {
		if (!key_filled) {
			cacheable = fill_cache_key(task, access, gen, subject, is_directory,
						   &cache_key, &fingerprint, &stamp, &name_len);
			cache_hit = cacheable &&
				    cpu_cache_find(&cache_key, fingerprint, &stamp, name_len, &cached);
		}
		if (cacheable && !cache_hit)
			cache_hit = find_shared_verdict(&cache_key, fingerprint, &stamp, name_len,
							subject_rules, &seen, &cached);
	}
	cacheable = cacheable && has_directory_rules;

	no_inodes_flag = access->kind == SIGIL_LSM_KIND_EXEC ? SIGIL_LSM_SUBJECT_NO_EXEC_INODES
							     : SIGIL_LSM_SUBJECT_NO_FILE_INODES;
	if (subject_rules && !(subject_rules->flags & no_inodes_flag))
		match_inode(gen, subject, access, dev, ino, &verdict);
	if (cache_hit) {
		directory_verdict.rule_index = cached.rule_index;
		directory_verdict.action = cached.action;
		directory_verdict.reason = cached.reason;
		directory_verdict.match = cached.match;
		merge_verdict(&verdict, &directory_verdict);
	} else if (has_directory_rules) {
		walk.directories = bpf_map_lookup_elem(&sigil_lsm_directories, &gen);
	}
	walk.key.subject = subject;
	walk.key.kind = access->kind;
	walk.seed = config->hash_seed;
	walk.write_intent = access->write_intent;
	/* without directory rules, or with a cached verdict, the path is resolved below, only for a record */
	if (walk.directories)
		path_len = resolve_and_match(buffer, owner, &walk, access, is_directory, &verdict,
					     &directory_verdict);

	/* nothing matched: the posture applies where the subject has Allow rules of the kind */
	posture_flag = access->kind == SIGIL_LSM_KIND_EXEC ? SIGIL_LSM_SUBJECT_HAS_EXEC_ALLOW
							   : SIGIL_LSM_SUBJECT_HAS_FILE_ALLOW;
	if (subject_rules && verdict.action == SIGIL_ACTION_NONE &&
	    (subject_rules->flags & posture_flag)) {
		verdict.action = access->kind == SIGIL_LSM_KIND_EXEC ? subject_rules->exec_posture
								     : subject_rules->file_posture;
		verdict.reason = SIGIL_REASON_POSTURE;
	}

	decision.tgid = tgid;
	decision.subject_id = subject;
	decision.generation = gen;
	decision.rule_index = verdict.rule_index;
	decision.dev = dev;
	decision.ino = ino;
	decision.action = verdict.action;
	decision.reason = verdict.reason;
	decision.denied = verdict.action == SIGIL_ACTION_BLOCK;
	decision.match = verdict.match;
	/*
	 * Audit and Block decisions are reported. Allowed execs and opens are
	 * reported only on request: every open of every identified process would
	 * flood the ring buffer and cost each open() a record.
	 */
	recorded = verdict.action == SIGIL_ACTION_AUDIT || verdict.action == SIGIL_ACTION_BLOCK ||
		   ((settings->flags & SIGIL_SETTINGS_REPORT_ALLOWED_ACCESS) &&
		    (subject || verdict.action != SIGIL_ACTION_NONE ||
		     verdict.reason != SIGIL_REASON_NO_POLICY));
	/* a walk whose path failed to resolve (too long, or a busy buffer) is not cached */
	if (cacheable && walk.directories && path_len > 0) {
		cached.stamp = stamp;
		cached.rule_index = directory_verdict.rule_index;
		cached.action = directory_verdict.action;
		cached.reason = directory_verdict.reason;
		cached.match = directory_verdict.match;
		cached.prefix_len = path_len - name_len;
		cached.fingerprint = fingerprint;
		cached.subject_rules = *subject_rules;
		cpu_cache_store(&cache_key, fingerprint, &cached);
		if (seen)
			shared_cache_store(&cache_key, &cached);
	}
	if (recorded) {
		if (!walk.directories)
			path_len = resolve_and_match(buffer, owner, &walk, access, is_directory, &verdict,
						     &directory_verdict);
		decision.path_len = path_len;
		fill_process_fields(&decision);
		emit_decision(access, &decision, buffer, owner);
	}
	return decision.denied ? -EPERM : 0;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(sigil_lsm_bprm_check, struct linux_binprm *bprm, int ret)
{
	struct file_access access = {};

	/* keep the denial of an earlier program on this hook */
	if (ret != 0)
		return ret;
	access.file = bprm->file;
	access.kind = SIGIL_LSM_KIND_EXEC;
	return decide_access(&access);
}

SEC("lsm/file_open")
int BPF_PROG(sigil_lsm_file_open, struct file *file, int ret)
{
	struct file_access access = {};
	__u32 f_mode, f_flags;

	if (ret != 0)
		return ret;
	f_mode = file->f_mode;
	f_flags = file->f_flags;
	access.file = file;
	access.kind = SIGIL_LSM_KIND_FILE;
	/* open(O_RDONLY | O_TRUNC) truncates a file after this hook allowed it as a read */
	access.write_intent = (f_mode & FMODE_WRITE) || (f_flags & O_TRUNC);
	access.exec_open = (f_flags & __FMODE_EXEC) != 0;
	return decide_access(&access);
}
