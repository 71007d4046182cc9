// File descriptors, pinning in the BPF file system, mount(2), and constants from kernel headers.
#include <errno.h>
#include <sys/mount.h>
#include <unistd.h>

#include <string>

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <napi.h>

#include "args.h"
#include "errors.h"
#include "functions.h"

namespace sigil {

namespace {

Napi::Value CloseFd(const Napi::CallbackInfo &info)
{
	int fd = ArgFd(info, 0, "fd");
	// Linux frees the descriptor even when close fails with EINTR, so there is no retry.
	if (close(fd) < 0 && errno != EINTR)
		ThrowErrno(info.Env(), "close fd " + std::to_string(fd), errno);
	return info.Env().Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo &info)
{
	std::string path = ArgString(info, 0, "path");
	int fd = bpf_obj_get(path.c_str());
	if (fd < 0)
		ThrowErrno(info.Env(), "open pinned BPF object " + path, errno);
	return Napi::Number::New(info.Env(), fd);
}

Napi::Value ObjPin(const Napi::CallbackInfo &info)
{
	int fd = ArgFd(info, 0, "fd");
	std::string path = ArgString(info, 1, "path");
	if (bpf_obj_pin(fd, path.c_str()) < 0)
		ThrowErrno(info.Env(), "pin fd " + std::to_string(fd) + " at " + path, errno);
	return info.Env().Undefined();
}

Napi::Value Mount(const Napi::CallbackInfo &info)
{
	std::string source = ArgString(info, 0, "source");
	std::string target = ArgString(info, 1, "target");
	std::string fstype = ArgString(info, 2, "fstype");
	auto flags = static_cast<unsigned long>(ArgInteger(info, 3, "flags", 0, UINT32_MAX));
	std::string data = ArgString(info, 4, "data");
	if (mount(source.c_str(), target.c_str(), fstype.empty() ? nullptr : fstype.c_str(), flags,
		  data.empty() ? nullptr : data.c_str()) < 0) {
		std::string type = fstype.empty() ? "" : " (" + fstype + ")";
		ThrowErrno(info.Env(), "mount " + source + " on " + target + type, errno);
	}
	return info.Env().Undefined();
}

void SetConstant(Napi::Env env, Napi::Object object, const char *name, double value)
{
	object.Set(name, Napi::Number::New(env, value));
}

// Values that the TypeScript wrapper also declares by hand; the tests compare the two.
Napi::Object Constants(Napi::Env env)
{
	Napi::Object constants = Napi::Object::New(env);
#define SIGIL_CONSTANT(name) SetConstant(env, constants, #name, name)
	SIGIL_CONSTANT(BPF_ANY);
	SIGIL_CONSTANT(BPF_NOEXIST);
	SIGIL_CONSTANT(BPF_EXIST);
	SIGIL_CONSTANT(BPF_F_LOCK);
	SIGIL_CONSTANT(BPF_F_NO_PREALLOC);
	SIGIL_CONSTANT(BPF_F_RDONLY_PROG);
	SIGIL_CONSTANT(BPF_F_WRONLY_PROG);
	SIGIL_CONSTANT(BPF_F_INNER_MAP);
	SIGIL_CONSTANT(BPF_MAP_TYPE_HASH);
	SIGIL_CONSTANT(BPF_MAP_TYPE_ARRAY);
	SIGIL_CONSTANT(BPF_MAP_TYPE_PERCPU_HASH);
	SIGIL_CONSTANT(BPF_MAP_TYPE_PERCPU_ARRAY);
	SIGIL_CONSTANT(BPF_MAP_TYPE_LRU_HASH);
	SIGIL_CONSTANT(BPF_MAP_TYPE_LRU_PERCPU_HASH);
	SIGIL_CONSTANT(BPF_MAP_TYPE_LPM_TRIE);
	SIGIL_CONSTANT(BPF_MAP_TYPE_ARRAY_OF_MAPS);
	SIGIL_CONSTANT(BPF_MAP_TYPE_HASH_OF_MAPS);
	SIGIL_CONSTANT(BPF_MAP_TYPE_SK_STORAGE);
	SIGIL_CONSTANT(BPF_MAP_TYPE_RINGBUF);
	SIGIL_CONSTANT(BPF_MAP_TYPE_TASK_STORAGE);
	SIGIL_CONSTANT(MS_RDONLY);
	SIGIL_CONSTANT(MS_NOSUID);
	SIGIL_CONSTANT(MS_NODEV);
	SIGIL_CONSTANT(MS_NOEXEC);
	SIGIL_CONSTANT(MS_REMOUNT);
	SIGIL_CONSTANT(MS_BIND);
	SIGIL_CONSTANT(MS_REC);
	SIGIL_CONSTANT(MS_PRIVATE);
	SIGIL_CONSTANT(MS_SHARED);
	SIGIL_CONSTANT(MS_RELATIME);
#undef SIGIL_CONSTANT
	return constants;
}

} // namespace

void InitSystem(Napi::Env env, Napi::Object exports)
{
	exports.Set("closeFd", Napi::Function::New<CloseFd>(env));
	exports.Set("objGet", Napi::Function::New<ObjGet>(env));
	exports.Set("objPin", Napi::Function::New<ObjPin>(env));
	exports.Set("mount", Napi::Function::New<Mount>(env));
	exports.Set("constants", Constants(env));
}

} // namespace sigil
