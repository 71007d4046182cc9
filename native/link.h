// Link: a JavaScript object that owns one libbpf bpf_link (an attached program).
#pragma once

#include <memory>
#include <string>

#include <napi.h>

#include "addon_state.h"

struct bpf_link;

namespace sigil {

class Link : public Napi::ObjectWrap<Link>, public Resource {
public:
	static void Init(Napi::Env env, Napi::Object exports, AddonState &state);

	// Creates a Link object that takes ownership of `link`. `description` names the attachment
	// in error messages, such as "program sigil_connect4 on cgroup /sys/fs/cgroup/unified".
	static Napi::Object Create(Napi::Env env, bpf_link *link, const std::string &description);

	explicit Link(const Napi::CallbackInfo &info);
	~Link() override;

	Kind ResourceKind() const override { return Kind::kLink; }
	void ReleaseResource() noexcept override;

private:
	void Pin(const Napi::CallbackInfo &info);
	void Unpin(const Napi::CallbackInfo &info);
	void Destroy(const Napi::CallbackInfo &info);
	Napi::Value GetFd(const Napi::CallbackInfo &info);
	Napi::Value GetPinPath(const Napi::CallbackInfo &info);
	Napi::Value GetDescription(const Napi::CallbackInfo &info);

	bpf_link *RequireLink(Napi::Env env, const char *operation) const;

	bpf_link *link_ = nullptr;
	std::string description_;
	std::shared_ptr<ResourceRegistry> registry_;
};

} // namespace sigil
