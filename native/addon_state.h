// Per-environment state of the addon. Node can load the addon into several environments, such as
// the main thread and worker threads. Each one gets its own AddonState as instance data, and a
// cleanup hook that releases whatever that environment still owns when it shuts down.
#pragma once

#include <memory>
#include <unordered_set>

#include <napi.h>

namespace sigil {

// A native handle owned by a JavaScript object: a BPF object, a link or a ring buffer consumer.
class Resource {
public:
	// Order in which the cleanup hook releases resources: consumer threads stop first because
	// they read maps, then links detach, then objects close.
	enum class Kind {
		kConsumer = 0,
		kLink = 1,
		kObject = 2
	};

	virtual ~Resource() = default;
	virtual Kind ResourceKind() const = 0;
	// Frees the native handle. Called more than once (by the JavaScript method, the cleanup
	// hook and the destructor), so it must do nothing after the first call.
	virtual void ReleaseResource() noexcept = 0;
};

// Live resources of one environment. Only that environment's JavaScript thread touches it, so
// it needs no lock. Wrappers hold it through a shared_ptr because Node gives no order between the
// cleanup hook, wrapper destructors and the instance-data finalizer.
class ResourceRegistry {
public:
	void Add(Resource *resource) { resources_.insert(resource); }
	void Remove(Resource *resource) { resources_.erase(resource); }
	// Releases every resource, consumers first, then links, then objects.
	void ReleaseAll() noexcept;

private:
	std::unordered_set<Resource *> resources_;
};

struct AddonState {
	std::shared_ptr<ResourceRegistry> registry = std::make_shared<ResourceRegistry>();
	// Constructor of the Link class, used to create Link objects from BpfObject methods.
	Napi::FunctionReference link_constructor;
};

// Returns the state of the environment. Throws if the addon was not initialized in it.
AddonState &GetAddonState(Napi::Env env);

} // namespace sigil
