// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Process lifecycle: a child inherits its parent's identity at fork, exec
 * reports the new program so user space can attest it, and the identity is
 * removed when the whole thread group has exited. Fork, exec and exit records
 * go to sigil_process_events, which user space uses to keep its process tree.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "maps.bpf.h"

/* Reserves a process record; a full ring buffer is counted, never silent. */
static __always_inline void *reserve_process_record(__u32 size)
{
	void *record = bpf_ringbuf_reserve(&sigil_process_events, size, 0);

	if (!record)
		sigil_count_drop(SIGIL_DROP_PROCESS_RINGBUF_FULL);
	return record;
}

/* Start time of a task's process, which distinguishes a reused tgid from its earlier owner. */
static __always_inline __u64 process_start(struct task_struct *task)
{
	return BPF_CORE_READ(task, group_leader, start_boottime);
}

SEC("raw_tp/sched_process_fork")
int sigil_process_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *parent = (struct task_struct *)ctx->args[0];
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	__u32 child_pid = BPF_CORE_READ(child, pid);
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	__u32 parent_tgid;
	struct sigil_identity *parent_identity;
	struct sigil_identity inherited = {};
	struct sigil_fork_record *record;

	/* a new thread shares its process's entry */
	if (child_pid != child_tgid)
		return 0;

	/* copy the parent's identity, or clear a stale entry left under this tgid */
	parent_tgid = BPF_CORE_READ(parent, tgid);
	parent_identity = bpf_map_lookup_elem(&sigil_identities, &parent_tgid);
	if (parent_identity) {
		inherited.id = parent_identity->id;
		inherited.flags = SIGIL_IDENTITY_INHERITED;
		inherited.start_ticks = BPF_CORE_READ(child, start_boottime) / SIGIL_NSEC_PER_CLOCK_TICK;
		bpf_map_update_elem(&sigil_identities, &child_tgid, &inherited, BPF_ANY);
	} else {
		bpf_map_delete_elem(&sigil_identities, &child_tgid);
	}

	/* report the new process, so user space knows its parent */
	record = reserve_process_record(sizeof(*record));
	if (!record)
		return 0;
	record->header.type = SIGIL_RECORD_FORK;
	record->header.size = sizeof(*record);
	record->header.ktime_ns = bpf_ktime_get_boot_ns();
	record->tgid = child_tgid;
	record->ppid = parent_tgid;
	/* the child is its own group leader, so its start time is the process's */
	record->start_boottime_ns = BPF_CORE_READ(child, start_boottime);
	record->parent_start_boottime_ns = process_start(parent);
	bpf_ringbuf_submit(record, 0);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int sigil_process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	__u64 uid_gid = bpf_get_current_uid_gid();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 filename_offset = ctx->__data_loc_filename & 0xffff;
	struct sigil_identity *identity;
	struct sigil_exec_record *record;

	/* the process keeps its identity until user space attests the new program */
	identity = bpf_map_lookup_elem(&sigil_identities, &tgid);
	if (identity)
		identity->flags |= SIGIL_IDENTITY_INHERITED;

	/* reserve the record */
	record = reserve_process_record(sizeof(*record));
	if (!record)
		return 0;

	/* fill it */
	record->header.type = SIGIL_RECORD_EXEC;
	record->header.size = sizeof(*record);
	record->header.ktime_ns = bpf_ktime_get_boot_ns();
	record->tgid = tgid;
	record->ppid = BPF_CORE_READ(parent, tgid);
	record->uid = (__u32)uid_gid;
	record->gid = uid_gid >> 32;
	record->inherited_id = identity ? identity->id : 0;
	record->pad = 0;
	record->start_boottime_ns = process_start(task);
	record->parent_start_boottime_ns = process_start(parent);
	record->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(record->comm, sizeof(record->comm));
	bpf_probe_read_kernel_str(record->filename, sizeof(record->filename),
				  (void *)ctx + filename_offset);

	/* submit */
	bpf_ringbuf_submit(record, 0);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int sigil_process_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct sigil_exit_record *record;

	/* signal->live reaches 0 when the last thread of the group exits */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	bpf_map_delete_elem(&sigil_identities, &tgid);

	/* reserve the record */
	record = reserve_process_record(sizeof(*record));
	if (!record)
		return 0;

	/* fill and submit it; do_exit() has set exit_code before this tracepoint */
	record->header.type = SIGIL_RECORD_EXIT;
	record->header.size = sizeof(*record);
	record->header.ktime_ns = bpf_ktime_get_boot_ns();
	record->tgid = tgid;
	record->exit_code = BPF_CORE_READ(task, exit_code);
	record->start_boottime_ns = process_start(task);
	bpf_ringbuf_submit(record, 0);
	return 0;
}

/*
 * Reports a task's move to another cgroup, so that user space attests the
 * process again: a cgroup:path selector may now give it another identity.
 * It keeps its identity until then, as after an exec.
 */
SEC("tracepoint/cgroup/cgroup_attach_task")
int sigil_cgroup_attach(struct trace_event_raw_cgroup_migrate *ctx)
{
	struct sigil_cgroup_record *record;

	record = reserve_process_record(sizeof(*record));
	if (!record)
		return 0;
	record->header.type = SIGIL_RECORD_CGROUP;
	record->header.size = sizeof(*record);
	record->header.ktime_ns = bpf_ktime_get_boot_ns();
	record->pid = ctx->pid;
	record->dst_root = ctx->dst_root;
	record->dst_id = ctx->dst_id;
	bpf_ringbuf_submit(record, 0);
	return 0;
}
