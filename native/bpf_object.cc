#include "bpf_object.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include <bpf/libbpf.h>

#include <napi.h>

#include "args.h"
#include "errors.h"
#include "libbpf_log.h"
#include "link.h"

namespace sigil {

namespace {

// Lines of libbpf output quoted in open and load errors. A verifier rejection usually explains
// itself in the last few instructions of its log.
constexpr size_t kLogTailLines = 40;

std::string LogDetail(uint64_t mark)
{
	std::string tail = LibbpfLogSince(mark, kLogTailLines);
	if (tail.empty())
		return tail;
	return "libbpf log (last lines):\n" + tail;
}

} // namespace

void BpfObject::Init(Napi::Env env, Napi::Object exports)
{
	Napi::Function constructor = DefineClass(
		env, "BpfObject",
		{
			InstanceMethod<&BpfObject::Load>("load"),
			InstanceMethod<&BpfObject::ProgramNames>("programNames"),
			InstanceMethod<&BpfObject::MapNames>("mapNames"),
			InstanceMethod<&BpfObject::MapFd>("mapFd"),
			InstanceMethod<&BpfObject::MapInfo>("mapInfo"),
			InstanceMethod<&BpfObject::SetMapPinPath>("setMapPinPath"),
			InstanceMethod<&BpfObject::PinMap>("pinMap"),
			InstanceMethod<&BpfObject::UnpinMap>("unpinMap"),
			InstanceMethod<&BpfObject::SetProgramAutoload>("setProgramAutoload"),
			InstanceMethod<&BpfObject::AttachCgroup>("attachCgroup"),
			InstanceMethod<&BpfObject::AttachTracepoint>("attachTracepoint"),
			InstanceMethod<&BpfObject::AttachRawTracepoint>("attachRawTracepoint"),
			InstanceMethod<&BpfObject::Attach>("attach"),
			InstanceMethod<&BpfObject::Close>("close"),
			InstanceAccessor<&BpfObject::GetPath>("path"),
			InstanceAccessor<&BpfObject::GetLoaded>("loaded"),
			InstanceAccessor<&BpfObject::GetClosed>("closed"),
		});
	exports.Set("BpfObject", constructor);
}

BpfObject::BpfObject(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfObject>(info)
{
	path_ = ArgString(info, 0, "path");
	registry_ = GetAddonState(info.Env()).registry;
	uint64_t mark = LibbpfLogMark();
	bpf_object *object = bpf_object__open_file(path_.c_str(), nullptr);
	if (object == nullptr) {
		int err = errno;
		ThrowErrno(info.Env(), "open BPF object " + path_, err, LogDetail(mark));
	}
	object_ = object;
	registry_->Add(this);
}

BpfObject::~BpfObject()
{
	ReleaseResource();
	registry_->Remove(this);
}

void BpfObject::ReleaseResource() noexcept
{
	if (object_ == nullptr)
		return;
	// Closes the object's map and program descriptors. Links keep their own references to the
	// programs, so attached programs stay attached until their links are destroyed.
	bpf_object__close(object_);
	object_ = nullptr;
	state_ = State::kClosed;
}

void BpfObject::RequireOpen(Napi::Env env, const std::string &operation) const
{
	if (state_ == State::kClosed)
		ThrowError(env, operation + ": BPF object " + path_ + " is closed");
}

void BpfObject::RequireLoaded(Napi::Env env, const std::string &operation) const
{
	RequireOpen(env, operation);
	if (state_ == State::kOpened)
		ThrowError(env, operation + ": BPF object " + path_ +
					" is not loaded; call load() first");
	if (state_ == State::kLoadFailed)
		ThrowError(env, operation + ": loading BPF object " + path_ +
					" failed; open the file again");
}

void BpfObject::RequireNotLoaded(Napi::Env env, const std::string &operation) const
{
	RequireOpen(env, operation);
	if (state_ != State::kOpened)
		ThrowError(env, operation + ": BPF object " + path_ +
					" was already loaded; call this before load()");
}

bpf_map *BpfObject::FindMap(Napi::Env env, const std::string &operation,
			    const std::string &name) const
{
	bpf_map *map = bpf_object__find_map_by_name(object_, name.c_str());
	if (map != nullptr)
		return map;
	std::string known;
	bpf_map *candidate;
	bpf_object__for_each_map(candidate, object_)
	{
		known += known.empty() ? "" : ", ";
		known += bpf_map__name(candidate);
	}
	ThrowError(env, operation + ": BPF object " + path_ + " has no map named " + name +
				" (maps: " + known + ")");
}

bpf_program *BpfObject::FindProgram(Napi::Env env, const std::string &operation,
				    const std::string &name) const
{
	bpf_program *program = bpf_object__find_program_by_name(object_, name.c_str());
	if (program != nullptr)
		return program;
	std::string known;
	bpf_program *candidate;
	bpf_object__for_each_program(candidate, object_)
	{
		known += known.empty() ? "" : ", ";
		known += bpf_program__name(candidate);
	}
	ThrowError(env, operation + ": BPF object " + path_ + " has no program named " + name +
				" (programs: " + known + ")");
}

void BpfObject::Load(const Napi::CallbackInfo &info)
{
	std::string operation = "load BPF object " + path_;
	RequireOpen(info.Env(), operation);
	if (state_ == State::kLoaded)
		ThrowError(info.Env(), operation + ": the object is already loaded");
	if (state_ == State::kLoadFailed)
		ThrowError(info.Env(), operation + ": an earlier load failed; open the file again");
	uint64_t mark = LibbpfLogMark();
	int err = bpf_object__load(object_);
	if (err < 0) {
		// libbpf unloads a partly loaded object but refuses to load it a second time.
		state_ = State::kLoadFailed;
		ThrowErrno(info.Env(), operation, -err, LogDetail(mark));
	}
	state_ = State::kLoaded;
}

Napi::Value BpfObject::ProgramNames(const Napi::CallbackInfo &info)
{
	RequireOpen(info.Env(), "list programs");
	Napi::Array names = Napi::Array::New(info.Env());
	uint32_t index = 0;
	bpf_program *program;
	bpf_object__for_each_program(program, object_)
	{
		names.Set(index++, Napi::String::New(info.Env(), bpf_program__name(program)));
	}
	return names;
}

Napi::Value BpfObject::MapNames(const Napi::CallbackInfo &info)
{
	RequireOpen(info.Env(), "list maps");
	Napi::Array names = Napi::Array::New(info.Env());
	uint32_t index = 0;
	bpf_map *map;
	bpf_object__for_each_map(map, object_)
	{
		names.Set(index++, Napi::String::New(info.Env(), bpf_map__name(map)));
	}
	return names;
}

Napi::Value BpfObject::MapFd(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "name");
	std::string operation = "get fd of map " + name;
	RequireLoaded(info.Env(), operation);
	bpf_map *map = FindMap(info.Env(), operation, name);
	int fd = bpf_map__fd(map);
	if (fd < 0)
		ThrowError(info.Env(), operation + ": the map was not created by load()");
	return Napi::Number::New(info.Env(), fd);
}

Napi::Value BpfObject::MapInfo(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "name");
	std::string operation = "get info of map " + name;
	RequireOpen(info.Env(), operation);
	bpf_map *map = FindMap(info.Env(), operation, name);
	Napi::Object result = Napi::Object::New(info.Env());
	result.Set("type", Napi::Number::New(info.Env(), bpf_map__type(map)));
	result.Set("keySize", Napi::Number::New(info.Env(), bpf_map__key_size(map)));
	result.Set("valueSize", Napi::Number::New(info.Env(), bpf_map__value_size(map)));
	result.Set("maxEntries", Napi::Number::New(info.Env(), bpf_map__max_entries(map)));
	result.Set("flags", Napi::Number::New(info.Env(), bpf_map__map_flags(map)));
	return result;
}

void BpfObject::SetMapPinPath(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "name");
	std::string path = ArgString(info, 1, "path");
	std::string operation = "set pin path of map " + name + " to " + path;
	RequireNotLoaded(info.Env(), operation);
	int err = bpf_map__set_pin_path(FindMap(info.Env(), operation, name), path.c_str());
	if (err < 0)
		ThrowErrno(info.Env(), operation, -err);
}

void BpfObject::PinMap(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "name");
	std::string path = ArgString(info, 1, "path");
	std::string operation = "pin map " + name + " at " + path;
	RequireLoaded(info.Env(), operation);
	int err = bpf_map__pin(FindMap(info.Env(), operation, name), path.c_str());
	if (err < 0)
		ThrowErrno(info.Env(), operation, -err);
}

void BpfObject::UnpinMap(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "name");
	bool has_path = !info[1].IsUndefined() && !info[1].IsNull();
	std::string path = has_path ? ArgString(info, 1, "path") : std::string();
	std::string operation = "unpin map " + name + (has_path ? " from " + path : "");
	RequireOpen(info.Env(), operation);
	bpf_map *map = FindMap(info.Env(), operation, name);
	// Without a path, libbpf removes the map's own pin path.
	int err = bpf_map__unpin(map, has_path ? path.c_str() : nullptr);
	if (err < 0)
		ThrowErrno(info.Env(), operation, -err);
}

void BpfObject::SetProgramAutoload(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "name");
	bool autoload = ArgBool(info, 1, "autoload");
	std::string operation = "set autoload of program " + name;
	RequireNotLoaded(info.Env(), operation);
	int err = bpf_program__set_autoload(FindProgram(info.Env(), operation, name), autoload);
	if (err < 0)
		ThrowErrno(info.Env(), operation, -err);
}

Napi::Value BpfObject::AttachCgroup(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "programName");
	std::string cgroup_path = ArgString(info, 1, "cgroupPath");
	std::string operation = "attach cgroup program " + name + " to " + cgroup_path;
	RequireLoaded(info.Env(), operation);
	bpf_program *program = FindProgram(info.Env(), operation, name);

	int cgroup_fd = open(cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgroup_fd < 0)
		ThrowErrno(info.Env(), "open cgroup " + cgroup_path, errno);
	// The attach type comes from the section name, such as BPF_CGROUP_INET4_CONNECT for
	// "cgroup/connect4". The link holds its own reference to the cgroup.
	bpf_link *link = bpf_program__attach_cgroup(program, cgroup_fd);
	int err = errno;
	close(cgroup_fd);
	if (link == nullptr)
		ThrowErrno(info.Env(), operation, err);
	return Link::Create(info.Env(), link, "program " + name + " on cgroup " + cgroup_path);
}

Napi::Value BpfObject::AttachTracepoint(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "programName");
	std::string category = ArgString(info, 1, "category");
	std::string tracepoint = ArgString(info, 2, "name");
	std::string target = category + "/" + tracepoint;
	std::string operation = "attach program " + name + " to tracepoint " + target;
	RequireLoaded(info.Env(), operation);
	bpf_program *program = FindProgram(info.Env(), operation, name);
	bpf_link *link =
		bpf_program__attach_tracepoint(program, category.c_str(), tracepoint.c_str());
	if (link == nullptr)
		ThrowErrno(info.Env(), operation, errno);
	return Link::Create(info.Env(), link, "program " + name + " on tracepoint " + target);
}

Napi::Value BpfObject::AttachRawTracepoint(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "programName");
	std::string tracepoint = ArgString(info, 1, "tracepointName");
	std::string operation = "attach program " + name + " to raw tracepoint " + tracepoint;
	RequireLoaded(info.Env(), operation);
	bpf_program *program = FindProgram(info.Env(), operation, name);
	bpf_link *link = bpf_program__attach_raw_tracepoint(program, tracepoint.c_str());
	if (link == nullptr)
		ThrowErrno(info.Env(), operation, errno);
	return Link::Create(info.Env(), link,
			    "program " + name + " on raw tracepoint " + tracepoint);
}

Napi::Value BpfObject::Attach(const Napi::CallbackInfo &info)
{
	std::string name = ArgString(info, 0, "programName");
	std::string operation = "attach program " + name;
	RequireLoaded(info.Env(), operation);
	bpf_program *program = FindProgram(info.Env(), operation, name);
	// libbpf picks the attach point from the section name. Sections without a target in the
	// name, such as "cgroup/connect4", fail with EOPNOTSUPP.
	bpf_link *link = bpf_program__attach(program);
	if (link == nullptr)
		ThrowErrno(info.Env(), operation, errno);
	return Link::Create(info.Env(), link,
			    "program " + name + " (" + bpf_program__section_name(program) + ")");
}

void BpfObject::Close(const Napi::CallbackInfo &)
{
	ReleaseResource();
}

Napi::Value BpfObject::GetPath(const Napi::CallbackInfo &info)
{
	return Napi::String::New(info.Env(), path_);
}

Napi::Value BpfObject::GetLoaded(const Napi::CallbackInfo &info)
{
	return Napi::Boolean::New(info.Env(), state_ == State::kLoaded);
}

Napi::Value BpfObject::GetClosed(const Napi::CallbackInfo &info)
{
	return Napi::Boolean::New(info.Env(), state_ == State::kClosed);
}

} // namespace sigil
