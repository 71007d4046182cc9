#include "link.h"

#include <errno.h>

#include <string>

#include <bpf/libbpf.h>

#include <napi.h>

#include "args.h"
#include "errors.h"

namespace sigil {

void Link::Init(Napi::Env env, Napi::Object exports, AddonState &state)
{
	Napi::Function constructor =
		DefineClass(env, "Link",
			    {
				    InstanceMethod<&Link::Pin>("pin"),
				    InstanceMethod<&Link::Unpin>("unpin"),
				    InstanceMethod<&Link::Destroy>("destroy"),
				    InstanceAccessor<&Link::GetFd>("fd"),
				    InstanceAccessor<&Link::GetPinPath>("pinPath"),
				    InstanceAccessor<&Link::GetDescription>("description"),
			    });
	state.link_constructor = Napi::Persistent(constructor);
	exports.Set("Link", constructor);
}

Napi::Object Link::Create(Napi::Env env, bpf_link *link, const std::string &description)
{
	AddonState &state = GetAddonState(env);
	Napi::Object object;
	try {
		object = state.link_constructor.New({Napi::External<bpf_link>::New(env, link)});
	} catch (...) {
		bpf_link__destroy(link);
		throw;
	}
	Link *wrapper = Unwrap(object);
	wrapper->description_ = description;
	return object;
}

// JavaScript cannot construct a Link: the constructor only accepts the External that Create
// passes.
Link::Link(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Link>(info)
{
	if (info.Length() != 1 || !info[0].IsExternal())
		ThrowTypeError(info.Env(), "Link objects are created by the attach methods of "
					   "BpfObject; the constructor is not public");
	link_ = info[0].As<Napi::External<bpf_link>>().Data();
	registry_ = GetAddonState(info.Env()).registry;
	registry_->Add(this);
}

Link::~Link()
{
	ReleaseResource();
	registry_->Remove(this);
}

void Link::ReleaseResource() noexcept
{
	if (link_ == nullptr)
		return;
	// Closes the link's file descriptor. The program stays attached only if the link is pinned.
	bpf_link__destroy(link_);
	link_ = nullptr;
}

bpf_link *Link::RequireLink(Napi::Env env, const char *operation) const
{
	if (link_ == nullptr)
		ThrowError(env, std::string(operation) + " link " + description_ +
					": the link is destroyed");
	return link_;
}

void Link::Pin(const Napi::CallbackInfo &info)
{
	bpf_link *link = RequireLink(info.Env(), "pin");
	std::string path = ArgString(info, 0, "path");
	int err = bpf_link__pin(link, path.c_str());
	if (err < 0)
		ThrowErrno(info.Env(), "pin link " + description_ + " at " + path, -err);
}

void Link::Unpin(const Napi::CallbackInfo &info)
{
	bpf_link *link = RequireLink(info.Env(), "unpin");
	const char *pin_path = bpf_link__pin_path(link);
	if (pin_path == nullptr)
		ThrowError(info.Env(), "unpin link " + description_ + ": the link is not pinned");
	std::string path = pin_path;
	int err = bpf_link__unpin(link);
	if (err < 0)
		ThrowErrno(info.Env(), "unpin link " + description_ + " from " + path, -err);
}

void Link::Destroy(const Napi::CallbackInfo &)
{
	ReleaseResource();
}

Napi::Value Link::GetFd(const Napi::CallbackInfo &info)
{
	return Napi::Number::New(info.Env(), bpf_link__fd(RequireLink(info.Env(), "get fd of")));
}

Napi::Value Link::GetPinPath(const Napi::CallbackInfo &info)
{
	if (link_ == nullptr)
		return info.Env().Null();
	const char *pin_path = bpf_link__pin_path(link_);
	if (pin_path == nullptr)
		return info.Env().Null();
	return Napi::String::New(info.Env(), pin_path);
}

Napi::Value Link::GetDescription(const Napi::CallbackInfo &info)
{
	return Napi::String::New(info.Env(), description_);
}

} // namespace sigil
