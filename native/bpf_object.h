// BpfObject: a JavaScript object that owns one libbpf bpf_object opened from an ELF file.
#pragma once

#include <memory>
#include <string>

#include <napi.h>

#include "addon_state.h"

struct bpf_object;
struct bpf_map;
struct bpf_program;

namespace sigil {

class BpfObject : public Napi::ObjectWrap<BpfObject>, public Resource {
public:
	static void Init(Napi::Env env, Napi::Object exports);

	explicit BpfObject(const Napi::CallbackInfo &info);
	~BpfObject() override;

	Kind ResourceKind() const override { return Kind::kObject; }
	void ReleaseResource() noexcept override;

private:
	enum class State {
		kOpened,
		kLoaded,
		kLoadFailed,
		kClosed
	};

	void Load(const Napi::CallbackInfo &info);
	Napi::Value ProgramNames(const Napi::CallbackInfo &info);
	Napi::Value MapNames(const Napi::CallbackInfo &info);
	Napi::Value MapFd(const Napi::CallbackInfo &info);
	Napi::Value MapInfo(const Napi::CallbackInfo &info);
	void SetMapPinPath(const Napi::CallbackInfo &info);
	void PinMap(const Napi::CallbackInfo &info);
	void UnpinMap(const Napi::CallbackInfo &info);
	void SetProgramAutoload(const Napi::CallbackInfo &info);
	Napi::Value AttachCgroup(const Napi::CallbackInfo &info);
	Napi::Value AttachTracepoint(const Napi::CallbackInfo &info);
	Napi::Value AttachRawTracepoint(const Napi::CallbackInfo &info);
	Napi::Value Attach(const Napi::CallbackInfo &info);
	void Close(const Napi::CallbackInfo &info);
	Napi::Value GetPath(const Napi::CallbackInfo &info);
	Napi::Value GetLoaded(const Napi::CallbackInfo &info);
	Napi::Value GetClosed(const Napi::CallbackInfo &info);

	// Throw unless the object is open (loaded or not), or unless it is loaded.
	void RequireOpen(Napi::Env env, const std::string &operation) const;
	void RequireLoaded(Napi::Env env, const std::string &operation) const;
	// Throw unless the object is open and not yet loaded.
	void RequireNotLoaded(Napi::Env env, const std::string &operation) const;

	bpf_map *FindMap(Napi::Env env, const std::string &operation,
			 const std::string &name) const;
	bpf_program *FindProgram(Napi::Env env, const std::string &operation,
				 const std::string &name) const;

	bpf_object *object_ = nullptr;
	State state_ = State::kOpened;
	std::string path_;
	std::shared_ptr<ResourceRegistry> registry_;
};

} // namespace sigil
