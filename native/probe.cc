// Feature probes: ask the kernel whether it supports a program type, a map type, or a helper in
// a program type. libbpf finds out by loading a minimal program or creating a minimal map.
#include <string.h>

#include <string>

#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <napi.h>

#include "args.h"
#include "errors.h"
#include "functions.h"

namespace sigil {

namespace {

struct ProgramTypeName {
	const char *name;
	bpf_prog_type type;
};

const ProgramTypeName kProgramTypes[] = {
	{"cgroup_sock_addr", BPF_PROG_TYPE_CGROUP_SOCK_ADDR},
	{"cgroup_sock", BPF_PROG_TYPE_CGROUP_SOCK},
	{"cgroup_skb", BPF_PROG_TYPE_CGROUP_SKB},
	{"cgroup_sockopt", BPF_PROG_TYPE_CGROUP_SOCKOPT},
	{"sock_ops", BPF_PROG_TYPE_SOCK_OPS},
	{"tracepoint", BPF_PROG_TYPE_TRACEPOINT},
	{"raw_tracepoint", BPF_PROG_TYPE_RAW_TRACEPOINT},
	{"socket_filter", BPF_PROG_TYPE_SOCKET_FILTER},
	{"lsm", BPF_PROG_TYPE_LSM},
	{"tracing", BPF_PROG_TYPE_TRACING},
	{"kprobe", BPF_PROG_TYPE_KPROBE},
};

struct MapTypeName {
	const char *name;
	bpf_map_type type;
};

const MapTypeName kMapTypes[] = {
	{"hash", BPF_MAP_TYPE_HASH},
	{"array", BPF_MAP_TYPE_ARRAY},
	{"percpu_hash", BPF_MAP_TYPE_PERCPU_HASH},
	{"percpu_array", BPF_MAP_TYPE_PERCPU_ARRAY},
	{"lru_hash", BPF_MAP_TYPE_LRU_HASH},
	{"ringbuf", BPF_MAP_TYPE_RINGBUF},
	{"array_of_maps", BPF_MAP_TYPE_ARRAY_OF_MAPS},
	{"hash_of_maps", BPF_MAP_TYPE_HASH_OF_MAPS},
	{"lpm_trie", BPF_MAP_TYPE_LPM_TRIE},
	{"sk_storage", BPF_MAP_TYPE_SK_STORAGE},
	{"task_storage", BPF_MAP_TYPE_TASK_STORAGE},
	{"inode_storage", BPF_MAP_TYPE_INODE_STORAGE},
};

struct HelperName {
	const char *name;
	bpf_func_id id;
};

// Every helper that the build's linux/bpf.h declares, under its name without "bpf_".
#define SIGIL_HELPER_ENTRY(name, ...)                                                              \
	{                                                                                          \
#name, BPF_FUNC_##name                                                             \
	}
const HelperName kHelpers[] = {__BPF_FUNC_MAPPER(SIGIL_HELPER_ENTRY)};
#undef SIGIL_HELPER_ENTRY

template <typename Entry>
std::string JoinNames(const Entry &table)
{
	std::string names;
	for (const auto &entry : table)
		names += std::string(names.empty() ? "" : ", ") + entry.name;
	return names;
}

bpf_prog_type LookUpProgramType(Napi::Env env, const std::string &name)
{
	for (const auto &entry : kProgramTypes) {
		if (name == entry.name)
			return entry.type;
	}
	ThrowTypeError(env, "unknown program type " + name +
				    " (known: " + JoinNames(kProgramTypes) + ")");
}

Napi::Object ProbeResult(Napi::Env env, int result)
{
	Napi::Object object = Napi::Object::New(env);
	object.Set("supported", Napi::Boolean::New(env, result == 1));
	if (result < 0)
		object.Set("error", Napi::String::New(env, ErrnoText(-result)));
	return object;
}

Napi::Value ProbeProgramType(const Napi::CallbackInfo &info)
{
	bpf_prog_type type = LookUpProgramType(info.Env(), ArgString(info, 0, "type"));
	return ProbeResult(info.Env(), libbpf_probe_bpf_prog_type(type, nullptr));
}

Napi::Value ProbeMapType(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "type");
	for (const auto &entry : kMapTypes) {
		if (name == entry.name)
			return ProbeResult(info.Env(),
					   libbpf_probe_bpf_map_type(entry.type, nullptr));
	}
	ThrowTypeError(info.Env(),
		       "unknown map type " + name + " (known: " + JoinNames(kMapTypes) + ")");
}

Napi::Value ProbeHelper(const Napi::CallbackInfo &info)
{
	bpf_prog_type type = LookUpProgramType(info.Env(), ArgString(info, 0, "progType"));
	std::string name = ArgString(info, 1, "helperName");
	if (name.rfind("bpf_", 0) == 0)
		name.erase(0, 4);
	for (const auto &entry : kHelpers) {
		if (name == entry.name && entry.id != BPF_FUNC_unspec)
			return ProbeResult(info.Env(),
					   libbpf_probe_bpf_helper(type, entry.id, nullptr));
	}
	ThrowTypeError(info.Env(), "unknown BPF helper " + name +
					   " (expected a name such as get_current_pid_tgid)");
}

} // namespace

void InitProbes(Napi::Env env, Napi::Object exports)
{
	exports.Set("probeProgramType", Napi::Function::New<ProbeProgramType>(env));
	exports.Set("probeMapType", Napi::Function::New<ProbeMapType>(env));
	exports.Set("probeHelper", Napi::Function::New<ProbeHelper>(env));
}

} // namespace sigil
