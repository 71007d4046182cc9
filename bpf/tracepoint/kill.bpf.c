// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tracepoint-kill: identity-keyed exec and file-open enforcement for kernels
 * without BPF LSM. The programs run after the operation has succeeded and
 * end the process with bpf_send_signal(SIGKILL) when the verdict is Block:
 * - raw_tp/sched_process_exec runs once execve() has replaced the process
 *   image and before the new program runs its first user-space instruction,
 *   so a blocked program never runs. The exec itself, and what it changed
 *   (the old image is gone), cannot be undone.
 * - the sys_exit tracepoints of open(), openat(), openat2(), creat() and
 *   open_by_handle_at() run when the call returns a descriptor. The open has
 *   happened: O_CREAT has created the file and O_TRUNC has truncated it, but
 *   the process is killed before it returns to user space and can read or
 *   write through the descriptor.
 *   NOTE: the programs read the file from the descriptor table, so another
 *   thread that dup2()s an allowed file into the new descriptor's slot first
 *   makes them decide that file, and keeps a copy of the blocked one.
 *
 * Rules match inodes. An exact-file rule matches the (device, inode) of the
 * file. A directory rule matches the (device, inode) of a directory that the
 * walk from the file up its d_parent chain reaches, where the walk crosses
 * from a mount's root to its mount point. The verdict follows the LSM programs: Block beats Audit beats
 * Allow, the lowest rule index among equal actions is reported, and the
 * posture applies when the subject has Allow rules of the kind and no rule
 * matched.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "tp_maps.bpf.h"
#include "path_verdict.bpf.h"

#define SIGKILL 9
#define FMODE_WRITE 0x2
#define O_TRUNC 01000
#define O_PATH 010000000
#define S_IFMT 0170000
#define S_IFDIR 0040000

/* The file an exec or open produced, and what the process can do with it. */
struct file_access {
	struct file *file;
	__u32 kind;		/* enum sigil_lsm_kind */
	__u32 syscall;		/* enum sigil_tp_syscall */
	__s32 fd;
	__u8 write_intent;
	/* user-space address of the path argument, or 0 to read kernel_path instead */
	const char *user_path;
	const char *kernel_path;
};

/* State of the walk from a file to the root, shared with the bpf_loop callback. */
struct ancestor_walk {
	struct dentry *dentry;
	struct mount *mnt;
	void *directories;	/* inner directory map of the generation */
	struct sigil_lsm_inode_key key;
	struct path_verdict verdict;
	__u32 depth;		/* directories looked up so far; 0 until the parent */
	__u8 write_intent;
	__u8 complete;
};

static __always_inline const struct sigil_lsm_verdict *
access_verdict(const struct sigil_lsm_access *access, __u8 write_intent)
{
	return write_intent ? &access->write : &access->read;
}

/* Fills the key's device and inode from a dentry's inode. */
static __always_inline void key_of_dentry(struct sigil_lsm_inode_key *key, struct dentry *dentry)
{
	struct inode *inode = BPF_CORE_READ(dentry, d_inode);

	key->ino = BPF_CORE_READ(inode, i_ino);
	key->dev = BPF_CORE_READ(inode, i_sb, s_dev);
}

/* bpf_loop callback: one step up from walk->dentry. Returns 1 at the root. */
static long walk_step(__u32 index, void *context)
{
	struct ancestor_walk *walk = context;
	struct sigil_lsm_directory_rules *rules;
	struct dentry *dentry = walk->dentry, *parent;
	struct mount *mnt = walk->mnt, *parent_mount;

	/* at a mount's root: go on from its mount point, whose own inode is hidden by the mount */
	if (dentry == BPF_CORE_READ(mnt, mnt.mnt_root)) {
		parent_mount = BPF_CORE_READ(mnt, mnt_parent);
		if (!parent_mount || parent_mount == mnt) {
			walk->complete = 1;
			return 1;
		}
		walk->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		walk->mnt = parent_mount;
		return 0;
	}
	parent = BPF_CORE_READ(dentry, d_parent);
	if (!parent || parent == dentry) {
		/* the root of a file system that is not mounted here, such as an unlinked tree */
		walk->complete = 1;
		return 1;
	}
	walk->dentry = parent;

	/* recursive rules of every ancestor, non-recursive ones of the parent */
	key_of_dentry(&walk->key, parent);
	rules = bpf_map_lookup_elem(walk->directories, &walk->key);
	if (rules) {
		raise_verdict(&walk->verdict, access_verdict(&rules->subtree, walk->write_intent),
			      SIGIL_LSM_MATCH_SUBTREE);
		if (walk->depth == 0)
			raise_verdict(&walk->verdict,
				      access_verdict(&rules->direct, walk->write_intent),
				      SIGIL_LSM_MATCH_DIRECTORY);
	}
	walk->depth++;
	return 0;
}

/*
 * Applies the directory rules of the generation to the file: those of its
 * ancestors, and its own when it is a directory. Returns whether the walk
 * reached the root.
 */
static __always_inline bool match_directories(void *directories, __u32 subject,
					      const struct file_access *access,
					      struct path_verdict *verdict)
{
	struct sigil_lsm_directory_rules *rules;
	struct ancestor_walk walk = {};
	struct file *file = access->file;
	struct vfsmount *vfsmnt;
	struct dentry *dentry;
	struct inode *inode;

	dentry = BPF_CORE_READ(file, f_path.dentry);
	walk.dentry = dentry;
	vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	/* container_of(vfsmnt, struct mount, mnt), with the offset relocated for this kernel */
	walk.mnt = (struct mount *)((void *)vfsmnt - bpf_core_field_offset(struct mount, mnt));
	walk.directories = directories;
	walk.key.subject = subject;
	walk.key.kind = access->kind;
	walk.write_intent = access->write_intent;

	/* an opened directory: its own rules, recursive or not */
	inode = BPF_CORE_READ(dentry, d_inode);
	if ((BPF_CORE_READ(inode, i_mode) & S_IFMT) == S_IFDIR) {
		key_of_dentry(&walk.key, dentry);
		rules = bpf_map_lookup_elem(directories, &walk.key);
		if (rules) {
			raise_verdict(&walk.verdict, access_verdict(&rules->direct, walk.write_intent),
				      SIGIL_LSM_MATCH_DIRECTORY);
			raise_verdict(&walk.verdict, access_verdict(&rules->subtree, walk.write_intent),
				      SIGIL_LSM_MATCH_DIRECTORY);
		}
	}

	bpf_loop(SIGIL_TP_MAX_WALK_STEPS, walk_step, &walk, 0);
	*verdict = walk.verdict;
	return walk.complete;
}

/* Writes a decision record; a full ring buffer is counted, never silent. */
static __always_inline void emit_decision(const struct file_access *access,
					  const struct sigil_path_decision *decision,
					  __s32 kill_result, bool walk_complete)
{
	struct sigil_tp_decision_record *record;
	__u32 type;
	long path_len;

	/* reserve the record */
	type = access->kind == SIGIL_LSM_KIND_EXEC ? SIGIL_RECORD_TP_EXEC_DECISION
						   : SIGIL_RECORD_TP_FILE_DECISION;
	record = sigil_reserve_event(type, sizeof(*record));
	if (!record)
		return;

	/* fill it */
	record->decision = *decision;
	fill_process_fields(&record->decision);
	record->kill_result = kill_result;
	record->fd = access->fd;
	record->syscall = access->syscall;
	record->write_intent = access->write_intent;
	record->walk_complete = walk_complete;
	record->pad[0] = 0;
	record->pad[1] = 0;
	bpf_get_current_comm(record->comm, sizeof(record->comm));
	if (access->user_path)
		path_len = bpf_probe_read_user_str(record->path, sizeof(record->path),
						   access->user_path);
	else if (access->kernel_path)
		path_len = bpf_probe_read_kernel_str(record->path, sizeof(record->path),
						     access->kernel_path);
	else
		path_len = -2;	/* -ENOENT: the call takes no path, as open_by_handle_at() */
	if (path_len < 0)
		record->path[0] = '\0';
	record->decision.path_len = path_len;

	/* submit; only a Block record wakes the consumer at once */
	bpf_ringbuf_submit(record,
			   sigil_event_submit_flags(decision->action == SIGIL_ACTION_BLOCK));
}

/* The current process's identity and its exec and file settings in the active generation. */
struct subject {
	__u32 generation;
	__u32 settings_flags;
	__u32 id;
	struct sigil_lsm_subject *rules;
};

/*
 * Looks up the subject of the current process. Returns false when it has no
 * rules in the active generation, the case of most processes, which the
 * programs leave before they read anything else.
 */
static __always_inline bool find_subject(struct subject *subject)
{
	__u32 zero = 0, tgid = bpf_get_current_pid_tgid() >> 32;
	struct sigil_settings *settings;
	void *subjects;

	settings = bpf_map_lookup_elem(&sigil_settings, &zero);
	if (!settings)
		return false;
	subject->generation = settings->generation;
	subject->settings_flags = settings->flags;
	subject->id = sigil_identity_of(tgid);
	subjects = bpf_map_lookup_elem(&sigil_tp_subjects, &subject->generation);
	if (!subjects)
		return false;
	subject->rules = bpf_map_lookup_elem(subjects, &subject->id);
	return subject->rules != NULL;
}

/*
 * Decides one exec or open and kills the process on Block. Audit and Block
 * decisions are reported; Allow ones only when allowed access is recorded.
 */
static __always_inline void decide_access(const struct subject *subject,
					  const struct file_access *access)
{
	struct sigil_path_decision decision = {};
	struct sigil_lsm_inode_key key = {};
	struct sigil_lsm_access *rules;
	struct path_verdict directory_verdict = {};
	struct path_verdict verdict = {};
	/* a local copy, so that BPF_CORE_READ relocates only kernel types */
	struct file *file = access->file;
	struct inode *inode;
	void *inodes, *directories;
	__u32 gen = subject->generation, posture_flag;
	bool walk_complete = false;
	__s32 kill_result = 0;

	/* exact-file rules */
	inode = BPF_CORE_READ(file, f_inode);
	key.ino = BPF_CORE_READ(inode, i_ino);
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	key.subject = subject->id;
	key.kind = access->kind;
	inodes = bpf_map_lookup_elem(&sigil_tp_inodes, &gen);
	rules = inodes ? bpf_map_lookup_elem(inodes, &key) : NULL;
	if (rules)
		raise_verdict(&verdict, access_verdict(rules, access->write_intent),
			      SIGIL_LSM_MATCH_INODE);

	/* directory rules */
	directories = bpf_map_lookup_elem(&sigil_tp_directories, &gen);
	if (directories) {
		walk_complete = match_directories(directories, subject->id, access, &directory_verdict);
		merge_verdict(&verdict, &directory_verdict);
	}

	/* nothing matched: the posture applies where the subject has Allow rules of the kind */
	posture_flag = access->kind == SIGIL_LSM_KIND_EXEC ? SIGIL_LSM_SUBJECT_HAS_EXEC_ALLOW
							   : SIGIL_LSM_SUBJECT_HAS_FILE_ALLOW;
	if (verdict.action == SIGIL_ACTION_NONE && (subject->rules->flags & posture_flag)) {
		verdict.action = access->kind == SIGIL_LSM_KIND_EXEC ? subject->rules->exec_posture
								     : subject->rules->file_posture;
		verdict.reason = SIGIL_REASON_POSTURE;
	}
	if (verdict.action == SIGIL_ACTION_NONE)
		return;

	if (verdict.action == SIGIL_ACTION_ALLOW &&
	    !(subject->settings_flags & SIGIL_SETTINGS_REPORT_ALLOWED_ACCESS))
		return;

	/* kill before the process returns to user space */
	if (verdict.action == SIGIL_ACTION_BLOCK)
		kill_result = bpf_send_signal(SIGKILL);

	decision.tgid = bpf_get_current_pid_tgid() >> 32;
	decision.subject_id = subject->id;
	decision.generation = gen;
	decision.rule_index = verdict.rule_index;
	decision.dev = key.dev;
	decision.ino = key.ino;
	decision.action = verdict.action;
	decision.reason = verdict.reason;
	decision.denied = verdict.action == SIGIL_ACTION_BLOCK;
	decision.match = verdict.match;
	emit_decision(access, &decision, kill_result, walk_complete);
}

SEC("raw_tp/sched_process_exec")
int sigil_tp_exec(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm) */
	struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];
	struct file_access access = {};
	struct subject subject;

	if (!find_subject(&subject))
		return 0;

	/*
	 * bprm->file is the program that runs: for a #! script, its interpreter,
	 * because exec_binprm() has released the script's file by now.
	 */
	access.file = BPF_CORE_READ(bprm, file);
	if (!access.file)
		return 0;
	access.kind = SIGIL_LSM_KIND_EXEC;
	access.syscall = SIGIL_TP_SYSCALL_EXEC;
	access.fd = -1;
	access.kernel_path = BPF_CORE_READ(bprm, filename);
	decide_access(&subject, &access);
	return 0;
}

/* Returns the struct file of descriptor fd of the current process, or NULL. */
static __always_inline struct file *file_of_fd(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/*
 * Decides the file behind descriptor fd, which an open system call of the
 * subject returned. flags are the call's open flags, needed for O_TRUNC.
 */
static __always_inline void decide_opened_fd(const struct subject *subject, long fd,
					     __u32 syscall, const char *user_path, __u64 flags)
{
	struct file_access access = {};
	struct file *file;
	__u32 f_mode;

	access.file = file_of_fd(fd);
	if (!access.file)
		return;
	access.kind = SIGIL_LSM_KIND_FILE;
	access.syscall = syscall;
	access.fd = fd;
	access.user_path = user_path;

	/* the kernel clears O_TRUNC from f_flags during the open, so it comes from the arguments */
	file = access.file;
	/* an O_PATH descriptor cannot read or write, and BPF LSM's file_open is not called for one */
	if (BPF_CORE_READ(file, f_flags) & O_PATH)
		return;
	f_mode = BPF_CORE_READ(file, f_mode);
	access.write_intent = (f_mode & FMODE_WRITE) || (flags & O_TRUNC);
	decide_access(subject, &access);
}

/*
 * Returns the argument at position 1 to 3 of the current system call from the
 * registers saved at entry. compat: an i386 system call, whose arguments are
 * in ebx, ecx and edx, and whose addresses are the low 32 bits.
 */
static __always_inline __u64 syscall_argument(struct pt_regs *regs, bool compat, int position)
{
	if (compat) {
		if (position == 1)
			return (__u32)BPF_CORE_READ(regs, bx);
		if (position == 2)
			return (__u32)BPF_CORE_READ(regs, cx);
		return (__u32)BPF_CORE_READ(regs, dx);
	}
	if (position == 1)
		return PT_REGS_PARM1_CORE_SYSCALL(regs);
	if (position == 2)
		return PT_REGS_PARM2_CORE_SYSCALL(regs);
	return PT_REGS_PARM3_CORE_SYSCALL(regs);
}

/*
 * Decides the file behind descriptor fd, which an open system call of the
 * current process returned. path_argument and flags_argument are the 1-based
 * positions of the call's path and flags arguments, or 0 for none. The flags
 * of openat2() come from its struct open_how, its third argument. regs are
 * the registers saved at entry; NULL takes those of the current task, which
 * are found only for a process with rules.
 */
static __always_inline void decide_open(struct pt_regs *regs, bool compat, long fd,
					__u32 syscall, int path_argument, int flags_argument)
{
	struct open_how how = {};
	struct subject subject;
	const char *user_path = NULL;
	__u64 flags = 0;

	if (fd < 0 || !find_subject(&subject))
		return;
	if (!regs)
		regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (path_argument)
		user_path = (const char *)syscall_argument(regs, compat, path_argument);
	if (syscall == SIGIL_TP_SYSCALL_OPENAT2) {
		bpf_probe_read_user(&how, sizeof(how),
				    (const void *)syscall_argument(regs, compat, 3));
		flags = how.flags;
	} else if (flags_argument) {
		flags = syscall_argument(regs, compat, flags_argument);
	}
	if (syscall == SIGIL_TP_SYSCALL_CREAT)
		flags = O_TRUNC;
	decide_opened_fd(&subject, fd, syscall, user_path, flags);
}

/* Decides the file that a 64-bit open system call returned, as decide_open does. */
static __always_inline int decide_native_open(struct syscall_trace_exit *ctx, __u32 syscall,
					      int path_argument, int flags_argument)
{
	if (ctx->ret < 0)
		return 0;
	/* the system call's arguments are still in the registers saved at entry */
	decide_open(NULL, false, ctx->ret, syscall, path_argument, flags_argument);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int sigil_tp_openat(struct syscall_trace_exit *ctx)
{
	/* openat(dirfd, pathname, flags, mode) */
	return decide_native_open(ctx, SIGIL_TP_SYSCALL_OPENAT, 2, 3);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int sigil_tp_openat2(struct syscall_trace_exit *ctx)
{
	/* openat2(dirfd, pathname, how, size) */
	return decide_native_open(ctx, SIGIL_TP_SYSCALL_OPENAT2, 2, 0);
}

SEC("tracepoint/syscalls/sys_exit_open")
int sigil_tp_open(struct syscall_trace_exit *ctx)
{
	/* open(pathname, flags, mode) */
	return decide_native_open(ctx, SIGIL_TP_SYSCALL_OPEN, 1, 2);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int sigil_tp_creat(struct syscall_trace_exit *ctx)
{
	/* creat(pathname, mode) is open(pathname, O_CREAT | O_WRONLY | O_TRUNC, mode) */
	return decide_native_open(ctx, SIGIL_TP_SYSCALL_CREAT, 1, 0);
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int sigil_tp_open_by_handle_at(struct syscall_trace_exit *ctx)
{
	/* open_by_handle_at(mount_fd, handle, flags) takes no path */
	return decide_native_open(ctx, SIGIL_TP_SYSCALL_OPEN_BY_HANDLE_AT, 0, 3);
}

/*
 * The syscalls/sys_exit_* tracepoints skip the system calls of the i386 ABI
 * (int 0x80, which a 64-bit process can also make), so without this program
 * an open through that ABI is never decided. The raw sys_exit tracepoint runs
 * this program at the end of every system call on the node, and it returns
 * at once unless the call is an i386 one. An fexit program on do_sys_openat2() would run only
 * on opens, but some kernels refuse fexit programs: a 6.18 kernel in
 * integrity lockdown rejected one on do_sys_openat2() with EPERM, while it
 * loaded raw tracepoint programs.
 */
#define TS_COMPAT 0x0002	/* thread_info.status bit of an i386 system call on x86-64 */
#define IA32_NR_OPEN 5
#define IA32_NR_CREAT 8
#define IA32_NR_OPENAT 295
#define IA32_NR_OPEN_BY_HANDLE_AT 342
#define IA32_NR_OPENAT2 437

SEC("raw_tp/sys_exit")
int sigil_tp_sys_exit_ia32(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(struct pt_regs *regs, long ret) */
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	long ret = ctx->args[1];

	if (!(task->thread_info.status & TS_COMPAT) || ret < 0)
		return 0;
	/* the argument positions are those of the 64-bit calls */
	switch (BPF_CORE_READ(regs, orig_ax)) {
	case IA32_NR_OPEN:
		decide_open(regs, true, ret, SIGIL_TP_SYSCALL_OPEN, 1, 2);
		break;
	case IA32_NR_CREAT:
		decide_open(regs, true, ret, SIGIL_TP_SYSCALL_CREAT, 1, 0);
		break;
	case IA32_NR_OPENAT:
		decide_open(regs, true, ret, SIGIL_TP_SYSCALL_OPENAT, 2, 3);
		break;
	case IA32_NR_OPENAT2:
		decide_open(regs, true, ret, SIGIL_TP_SYSCALL_OPENAT2, 2, 0);
		break;
	case IA32_NR_OPEN_BY_HANDLE_AT:
		decide_open(regs, true, ret, SIGIL_TP_SYSCALL_OPEN_BY_HANDLE_AT, 0, 3);
		break;
	}
	return 0;
}
